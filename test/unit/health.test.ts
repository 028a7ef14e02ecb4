/**
 * Health checks, the pure parts: the per-server state machine (rise, fall,
 * the flap limit), the overlay that turns states into effective weights, the
 * schema, and the scheduler against a fake prober (phase spread, the cap on
 * probes in flight, inconclusive probes).
 */
import { describe, expect, it } from 'vitest';
import { Service, ServiceInput, type Service as ServiceT } from '@switchyard/shared';
import { effectiveService, HealthChecker, initialHealth, observe, targetsOf, type Prober, type ProbeResult, type ProbeSpec } from '../../packages/agent/src/l4/health/index.js';

const rule = { rise: 2, fall: 3, intervalMs: 1000 };
const ok = { ok: true } as const;
const bad = { ok: false, error: 'tcp connect: ECONNREFUSED' } as const;

function run(results: ({ ok: true } | { ok: false; error: string })[], start = 0, step = 1000) {
  let h = initialHealth(start);
  const states: string[] = [];
  results.forEach((r, i) => {
    h = observe(h, r, start + (i + 1) * step, rule);
    states.push(h.state);
  });
  return { h, states };
}

describe('health state machine', () => {
  it('unknown becomes healthy on the first success (it was in the pick already)', () => {
    expect(run([ok]).states).toEqual(['healthy']);
  });
  it('falls after `fall` failures in a row, rises after `rise` successes in a row', () => {
    const { states, h } = run([ok, bad, bad, bad, ok, ok, ok]);
    expect(states).toEqual(['healthy', 'healthy', 'healthy', 'unhealthy', 'unhealthy', 'healthy', 'healthy']);
    expect(h.lastError).toBe('tcp connect: ECONNREFUSED');
  });
  it('a success breaks a run of failures', () => {
    expect(run([bad, bad, ok, bad, bad]).states.at(-1)).toBe('healthy');
    expect(run([bad, bad, bad]).states.at(-1)).toBe('unhealthy');
  });
  it('changes the pick at most once per rise × interval', () => {
    // Checks every 100 ms although the rule says 1 s: the second flip must wait until 2 s after the first.
    let h = initialHealth(0);
    const flips: number[] = [];
    const seq = [bad, bad, bad, ok, ok, ok, ok, ok, ok, ok, ok, ok, ok, ok, ok, ok, ok, ok, ok, ok, ok, ok, ok, ok];
    seq.forEach((r, i) => {
      const before = h.state;
      h = observe(h, r, (i + 1) * 100, rule);
      if (before !== h.state && before !== 'unknown') flips.push((i + 1) * 100);
      else if (before === 'unknown' && h.state === 'unhealthy') flips.push((i + 1) * 100);
    });
    expect(flips).toEqual([300, 2300]);
  });
});

const svc = (servers: [string, number][], health: ServiceT['health'] | null = { type: 'tcp', interval: '1s', timeout: '500ms', rise: 2, fall: 3 }): ServiceT =>
  Service.parse({
    id: 'tcp-10_0_0_1-80',
    host: '10.0.0.1',
    port: 80,
    type: 'tcp',
    scheduler: 'rr',
    persistence: 0,
    netmask: '',
    servers: servers.map(([host, weight]) => ({ id: `${host.replace(/\./g, '_')}-8080`, host, port: 8080, forwarder: 'm', weight, upper_threshold: 0, lower_threshold: 0 })),
    ...(health ? { health } : {}),
  });

describe('effective weights', () => {
  const s = svc([['10.0.1.1', 3], ['10.0.1.2', 1], ['10.0.1.3', 0]]);
  it('an unhealthy server gets weight 0; the stored service is untouched', () => {
    const e = effectiveService(s, (id) => (id === '10_0_1_1-8080' ? 'unhealthy' : 'healthy'));
    expect(e.allDown).toBe(false);
    expect(e.service.servers.map((x) => x.weight)).toEqual([0, 1, 0]);
    expect(s.servers.map((x) => x.weight)).toEqual([3, 1, 0]);
  });
  it('unknown and unchecked servers stay in; nothing down returns the same object', () => {
    expect(effectiveService(s, () => 'unknown').service).toBe(s);
    expect(effectiveService(s, () => undefined).service).toBe(s);
  });
  it('when every serving server fails, all are kept in and it is reported', () => {
    const e = effectiveService(s, (id) => (id === '10_0_1_3-8080' ? 'healthy' : 'unhealthy'));
    expect(e).toEqual({ service: s, allDown: true });
  });
  it('services without checks (or type none) are never changed', () => {
    const plain = svc([['10.0.1.1', 1]], null);
    expect(plain.health).toBeUndefined();
    expect(effectiveService(plain, () => 'unhealthy')).toEqual({ service: plain, allDown: false });
    const none = svc([['10.0.1.1', 1], ['10.0.1.2', 1]], { type: 'none', interval: '2s', timeout: '1s', rise: 2, fall: 3 });
    expect(effectiveService(none, () => 'unhealthy').service).toBe(none);
  });
});

describe('health schema', () => {
  const base = { host: '10.0.0.1', port: 80 };
  it('fills defaults and canonicalises durations', () => {
    expect(ServiceInput.parse({ ...base, health: { type: 'http' } }).health).toEqual({ type: 'http', path: '/healthz', expect: 200, interval: '2s', timeout: '1s', rise: 2, fall: 3 });
    expect(ServiceInput.parse({ ...base, health: { type: 'tcp', interval: '500ms', timeout: '0.25', port: 9000 } }).health).toEqual({ type: 'tcp', interval: '500ms', timeout: '250ms', rise: 2, fall: 3, port: 9000 });
  });
  it('is absent unless sent (Portal clients)', () => {
    expect(ServiceInput.parse(base).health).toBeUndefined();
  });
  it('refuses bad values', () => {
    for (const health of [
      { type: 'icmp' },
      { type: 'http', path: 'healthz' },
      { type: 'http', path: '/a b' },
      { type: 'http', path: '/a\r\nX: y' },
      { type: 'tcp', path: '/x' },
      { type: 'http', expect: 42 },
      { type: 'tcp', interval: '1s', timeout: '2s' },
      { type: 'tcp', interval: '10ms' },
      { type: 'tcp', interval: 'soon' },
      { type: 'tcp', rise: 0 },
      { type: 'tcp', port: 70000 },
      { type: 'tcp', extra: 1 },
    ]) {
      expect(ServiceInput.safeParse({ ...base, health }).success, JSON.stringify(health)).toBe(false);
    }
  });
  it('UDP services take only none or an explicit probe port', () => {
    const udp = { ...base, type: 'udp' };
    expect(ServiceInput.safeParse({ ...udp, health: { type: 'tcp' } }).success).toBe(false);
    expect(ServiceInput.safeParse({ ...udp, health: { type: 'http' } }).success).toBe(false);
    expect(ServiceInput.safeParse({ ...udp, health: { type: 'none' } }).success).toBe(true);
    expect(ServiceInput.safeParse({ ...udp, health: { type: 'http', port: 8081 } }).success).toBe(true);
  });
});

/** A prober whose answers the test decides; it records what is in flight. */
class FakeProber implements Prober {
  inFlight = 0;
  maxInFlight = 0;
  calls: ProbeSpec[] = [];
  constructor(private readonly answer: (spec: ProbeSpec) => ProbeResult | undefined, private readonly delayMs = 5) {}
  async probe(spec: ProbeSpec) {
    this.calls.push(spec);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    await new Promise((r) => setTimeout(r, this.delayMs));
    this.inFlight--;
    return this.answer(spec);
  }
  async close() {}
}

const many = (n: number, health: ServiceT['health']) => svc(Array.from({ length: n }, (_, i) => [`10.0.${1 + (i >> 8)}.${i & 255}`, 1] as [string, number]), health);

describe('health checker', () => {
  it('spreads first checks over the interval and caps probes in flight', async () => {
    const prober = new FakeProber(() => ok, 40);
    const changes: string[] = [];
    const checker = new HealthChecker({ prober, concurrency: 8, onChange: (id) => changes.push(id) });
    const s = many(200, { type: 'tcp', interval: '400ms', timeout: '100ms', rise: 1, fall: 1 });
    const started = Date.now();
    checker.setService(s.id, targetsOf(s, () => false));
    await new Promise((r) => setTimeout(r, 150));
    // 200 checks spread over 400 ms, at most 8 in flight: nowhere near all at once.
    expect(prober.calls.length).toBeLessThan(120);
    await new Promise((r) => setTimeout(r, 1200));
    expect(prober.maxInFlight).toBeLessThanOrEqual(8);
    expect(checker.summary().counts).toEqual({ healthy: 200, unhealthy: 0, unknown: 0 });
    expect(checker.size).toBe(200);
    expect(Date.now() - started).toBeGreaterThan(0);
    await checker.stop();
  });

  it('reports pick changes, probes the probe port, skips held servers and forgets removed services', async () => {
    let down = new Set<string>(['10.0.1.1']);
    const prober = new FakeProber((spec) => (down.has(spec.host) ? bad : ok));
    const changes: [string, boolean][] = [];
    const checker = new HealthChecker({ prober, concurrency: 16, onChange: (id, pick) => changes.push([id, pick]) });
    const s = svc([['10.0.1.1', 1], ['10.0.1.2', 1], ['10.0.1.3', 1]], { type: 'http', path: '/ok', expect: 204, interval: '100ms', timeout: '50ms', rise: 2, fall: 2, port: 9000 });
    checker.setService(s.id, targetsOf(s, (serverId) => serverId === '10_0_1_3-8080'));
    await new Promise((r) => setTimeout(r, 500));
    expect(checker.state(s.id, '10_0_1_1-8080')).toBe('unhealthy');
    expect(checker.state(s.id, '10_0_1_2-8080')).toBe('healthy');
    expect(checker.state(s.id, '10_0_1_3-8080')).toBeUndefined();
    expect(prober.calls.every((c) => c.port === 9000 && c.path === '/ok' && c.expect === 204 && c.host !== '10.0.1.3')).toBe(true);
    expect(changes).toContainEqual([s.id, true]);
    const { notHealthy } = checker.summary();
    expect(notHealthy).toMatchObject([{ serviceId: s.id, serverId: '10_0_1_1-8080', state: 'unhealthy', lastError: bad.error }]);
    down = new Set();
    await new Promise((r) => setTimeout(r, 500));
    expect(checker.state(s.id, '10_0_1_1-8080')).toBe('healthy');
    checker.setService(s.id, targetsOf(undefined, () => false));
    expect(checker.size).toBe(0);
    const calls = prober.calls.length;
    await new Promise((r) => setTimeout(r, 300));
    expect(prober.calls.length).toBeLessThanOrEqual(calls + 2); // at most the probes already in flight
    await checker.stop();
  });

  it('servers that several services check the same way share one probe and one state', async () => {
    let down = new Set<string>();
    const prober = new FakeProber((spec) => (down.has(spec.host) ? bad : ok));
    const changes: [string, boolean][] = [];
    const checker = new HealthChecker({ prober, concurrency: 16, onChange: (id, pick) => changes.push([id, pick]) });
    const health = { type: 'tcp', interval: '100ms', timeout: '50ms', rise: 1, fall: 1 } as const;
    const a = svc([['10.0.1.1', 1], ['10.0.1.2', 1]], health);
    const b = { ...a, id: 'tcp-10_0_0_2-80', host: '10.0.0.2' };
    // Same servers, but checked on another port: those are probes of their own.
    const c = { ...a, id: 'tcp-10_0_0_3-80', host: '10.0.0.3', health: { ...a.health!, port: 9000 } };
    for (const s of [a, b, c]) checker.setService(s.id, targetsOf(s, () => false));
    expect(checker.size).toBe(6);
    expect(checker.probes).toBe(4);
    await new Promise((r) => setTimeout(r, 450));
    const perEndpoint = new Map<string, number>();
    for (const call of prober.calls) perEndpoint.set(`${call.host}:${call.port}`, (perEndpoint.get(`${call.host}:${call.port}`) ?? 0) + 1);
    // Every 100 ms for ~450 ms: about 4 probes per endpoint, not 8 for the shared ones.
    expect(perEndpoint.get('10.0.1.1:8080')).toBeLessThanOrEqual(6);
    expect(perEndpoint.get('10.0.1.1:9000')).toBeGreaterThanOrEqual(2);
    down = new Set(['10.0.1.1']);
    await new Promise((r) => setTimeout(r, 400));
    // One probe failing takes the server out of every service that shares it.
    for (const s of [a, b, c]) expect(checker.state(s.id, '10_0_1_1-8080')).toBe('unhealthy');
    for (const s of [a, b, c]) expect(changes).toContainEqual([s.id, true]);
    expect(checker.summary().counts).toEqual({ healthy: 3, unhealthy: 3, unknown: 0 });
    // A service that stops checking leaves the probe to the others; the last one drops it.
    checker.setService(a.id, targetsOf(undefined, () => false));
    expect([checker.size, checker.probes]).toEqual([4, 4]);
    checker.setService(b.id, targetsOf(undefined, () => false));
    expect([checker.size, checker.probes]).toEqual([2, 2]);
    expect(checker.state(c.id, '10_0_1_1-8080')).toBe('unhealthy');
    // A changed rule on the same endpoint keeps what was learnt about it.
    checker.setService(c.id, targetsOf({ ...c, health: { ...c.health, fall: 5 } }, () => false));
    expect(checker.state(c.id, '10_0_1_1-8080')).toBe('unhealthy');
    expect(checker.probes).toBe(2);
    await checker.stop();
  });

  it('an inconclusive probe (the prober failed) counts neither way', async () => {
    const prober = new FakeProber(() => undefined);
    const checker = new HealthChecker({ prober, concurrency: 4, onChange: () => undefined });
    const s = svc([['10.0.1.1', 1]], { type: 'tcp', interval: '100ms', timeout: '50ms', rise: 1, fall: 1 });
    checker.setService(s.id, targetsOf(s, () => false));
    await new Promise((r) => setTimeout(r, 400));
    expect(checker.state(s.id, '10_0_1_1-8080')).toBe('unknown');
    expect(checker.stats.inconclusive).toBeGreaterThan(1);
    await checker.stop();
  });

  it('says how far behind schedule the checks run when it cannot keep up', async () => {
    // 20 servers every 200 ms, one probe at a time, 50 ms each: 100 probes a second asked, 20 possible.
    const prober = new FakeProber(() => ok, 50);
    const checker = new HealthChecker({ prober, concurrency: 1, onChange: () => undefined });
    const s = many(20, { type: 'tcp', interval: '200ms', timeout: '100ms', rise: 1, fall: 1 });
    checker.setService(s.id, targetsOf(s, () => false));
    await new Promise((r) => setTimeout(r, 2200));
    expect(checker.delayMs).toBeGreaterThan(300);
    await checker.stop();
    const relaxed = new HealthChecker({ prober: new FakeProber(() => ok, 5), concurrency: 8, onChange: () => undefined });
    relaxed.setService(s.id, targetsOf(s, () => false));
    await new Promise((r) => setTimeout(r, 1200));
    expect(relaxed.delayMs).toBeLessThan(100);
    await relaxed.stop();
  });
});
