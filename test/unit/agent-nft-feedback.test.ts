/**
 * The nftables connection feedback without a kernel: IPVS's least-connection
 * formulas and threshold hysteresis as a pure function, conntrack's text as
 * it really prints it, the feedback driver against a fake connection table
 * (only changed picks are handed on; a failed read changes nothing), and the
 * golden nft a pick turns into (slot elements only; per-server chains and
 * affinity sets stay; every server overloaded → reject).
 */
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ServiceInput, toService, type Service } from '@switchyard/shared';
import { ConntrackAdapter, FakeConntrack, parseConntrack, parseConntrackEvent, type ConntrackEntry } from '../../packages/agent/src/adapters/conntrack.js';
import { FakeRunner } from '../../packages/agent/src/exec/runner.js';
import { emptyObserved, NftExecutor, planNft, renderNftScript, serviceObjects, type ServiceObjects } from '../../packages/agent/src/l4/nftables/index.js';
import type { EffectiveService } from '../../packages/agent/src/l4/dataplane.js';
import { ConnectionFeedback, needsFeedback, overloadedNow, pickServers, type PickServer, type ServerLoad } from '../../packages/agent/src/l4/feedback/index.js';
import { NftDataplane } from '../../packages/agent/src/l4/nftables/dataplane.js';

const silent = pino({ level: 'silent' });
const fixture = (f: string) => readFileSync(new URL(`../fixtures/agent/conntrack/${f}`, import.meta.url), 'utf8');

const srv = (id: string, weight = 1, upper = 0, lower = 0): PickServer => ({ id, weight, upper_threshold: upper, lower_threshold: lower });
const loads = (o: Record<string, [number, number]>) => new Map<string, ServerLoad>(Object.entries(o).map(([id, [active, inactive]]) => [id, { active, inactive }]));
const ids = (r: { pick: { id: string; weight: number }[] }) => r.pick.map((p) => `${p.id}:${p.weight}`);

describe('pickServers: the IPVS formulas', () => {
  it('lc: least active × 256 + inactive, weights ignored; ties share equally', () => {
    const servers = [srv('a', 5), srv('b', 1), srv('c', 2)];
    expect(ids(pickServers({ scheduler: 'lc', servers, loads: loads({ a: [2, 0], b: [1, 300], c: [1, 10] }), overloaded: new Map() }))).toEqual(['c:1']);
    // 256 inactive weigh as much as one active.
    expect(ids(pickServers({ scheduler: 'lc', servers, loads: loads({ a: [1, 0], b: [0, 256], c: [0, 257] }), overloaded: new Map() }))).toEqual(['a:1', 'b:1']);
  });

  it('wlc: least overhead / weight; ties share by weight; no counts at all is a tie', () => {
    const servers = [srv('a', 1), srv('b', 3)];
    // a: 512/1, b: 1280/3 ≈ 427 → b.
    expect(ids(pickServers({ scheduler: 'wlc', servers, loads: loads({ a: [2, 0], b: [5, 0] }), overloaded: new Map() }))).toEqual(['b:3']);
    expect(ids(pickServers({ scheduler: 'wlc', servers, loads: loads({ a: [1, 0], b: [3, 0] }), overloaded: new Map() }))).toEqual(['a:1', 'b:3']);
    expect(ids(pickServers({ scheduler: 'wlc', servers, loads: new Map(), overloaded: new Map() }))).toEqual(['a:1', 'b:3']);
  });

  it('sed counts (active + 1) / weight, where wlc would pick the idle small server', () => {
    const servers = [srv('a', 1), srv('b', 10)];
    const l = loads({ b: [1, 0] });
    expect(ids(pickServers({ scheduler: 'wlc', servers, loads: l, overloaded: new Map() }))).toEqual(['a:1']);
    // a: 1/1, b: 2/10.
    expect(ids(pickServers({ scheduler: 'sed', servers, loads: l, overloaded: new Map() }))).toEqual(['b:10']);
  });

  it('nq: an idle server first, else as sed', () => {
    const servers = [srv('a', 1), srv('b', 10)];
    expect(ids(pickServers({ scheduler: 'nq', servers, loads: loads({ b: [1, 0] }), overloaded: new Map() }))).toEqual(['a:1']);
    expect(ids(pickServers({ scheduler: 'nq', servers, loads: loads({ a: [1, 0], b: [2, 0] }), overloaded: new Map() }))).toEqual(['b:10']);
  });

  it('lblc and lblcr choose as wlc (behind a VIP every connection has the same destination)', () => {
    const servers = [srv('a', 1), srv('b', 3)];
    for (const scheduler of ['lblc', 'lblcr'] as const) {
      expect(ids(pickServers({ scheduler, servers, loads: loads({ a: [2, 0], b: [5, 0] }), overloaded: new Map() }))).toEqual(['b:3']);
    }
  });

  it('weight 0 takes nothing new; unknown counts fall back to the weights', () => {
    const servers = [srv('a', 0), srv('b', 2), srv('c', 1)];
    expect(ids(pickServers({ scheduler: 'lc', servers, loads: loads({ b: [3, 0], c: [4, 0] }), overloaded: new Map() }))).toEqual(['b:1']);
    expect(ids(pickServers({ scheduler: 'wlc', servers, overloaded: new Map() }))).toEqual(['b:2', 'c:1']);
  });

  it('schedulers that do not count connections keep their weights', () => {
    const servers = [srv('a', 3), srv('b', 1)];
    expect(ids(pickServers({ scheduler: 'wrr', servers, loads: loads({ a: [100, 0] }), overloaded: new Map() }))).toEqual(['a:3', 'b:1']);
  });
});

describe('thresholds: IPVS overload hysteresis', () => {
  /** The overload flag of one server over a sequence of totals (active only). */
  function run(s: PickServer, totals: number[]): boolean[] {
    let was: number | undefined;
    return totals.map((t) => {
      const on = overloadedNow(s, { active: t, inactive: 0 }, was);
      was = on ? (was ?? s.upper_threshold) : undefined;
      return on;
    });
  }

  it('overloaded at upper, back only below lower', () => {
    expect(run(srv('a', 1, 3, 1), [2, 3, 2, 1, 0, 2])).toEqual([false, true, true, true, false, false]);
  });

  it('with lower 0: back once total × 4 < upper × 3', () => {
    expect(run(srv('a', 1, 4, 0), [4, 3, 2, 3])).toEqual([true, true, false, false]);
  });

  it('counts active and inactive connections alike', () => {
    expect(overloadedNow(srv('a', 1, 3), { active: 1, inactive: 2 }, undefined)).toBe(true);
  });

  it('raising the upper threshold or setting it to 0 clears the flag; lowering it keeps it', () => {
    const l = { active: 3, inactive: 0 };
    expect(overloadedNow(srv('a', 1, 5, 1), l, 4)).toBe(false);
    expect(overloadedNow(srv('a', 1, 0, 1), { active: 9, inactive: 0 }, 4)).toBe(false);
    expect(overloadedNow(srv('a', 1, 4, 1), { active: 2, inactive: 0 }, 4)).toBe(true);
  });

  it('unknown counts keep the flag as it was', () => {
    expect(overloadedNow(srv('a', 1, 3), undefined, 3)).toBe(true);
    expect(overloadedNow(srv('a', 1, 3), undefined, undefined)).toBe(false);
  });

  it('an overloaded server leaves the pick of any scheduler; all overloaded leaves it empty', () => {
    const servers = [srv('a', 1, 3, 1), srv('b', 1)];
    const r = pickServers({ scheduler: 'rr', servers, loads: loads({ a: [3, 0] }), overloaded: new Map() });
    expect(ids(r)).toEqual(['b:1']);
    expect([...r.overloaded]).toEqual([['a', 3]]);
    // Next round: a has 2 (not below lower 1), b is at its own threshold now.
    const all = [srv('a', 1, 3, 1), srv('b', 1, 2)];
    const r2 = pickServers({ scheduler: 'wlc', servers: all, loads: loads({ a: [2, 0], b: [1, 1] }), overloaded: r.overloaded });
    expect(r2.pick).toEqual([]);
    expect([...r2.overloaded.keys()]).toEqual(['a', 'b']);
  });
});

describe('conntrack', () => {
  it('parses what conntrack -L --dst-nat prints: VIP from the original tuple, server from the reply tuple', () => {
    expect(parseConntrack(fixture('dnat-ipv4.txt'))).toEqual<ConntrackEntry[]>([
      { id: 'tcp 10.8.8.8 33224 10.9.9.9 80', proto: 'tcp', state: 'TIME_WAIT', timeout: 119, vip: '10.9.9.9', vport: 80, server: '10.8.8.8', sport: 8080 },
      { id: 'tcp 10.8.8.8 33218 10.9.9.9 80', proto: 'tcp', state: 'ESTABLISHED', timeout: 431999, vip: '10.9.9.9', vport: 80, server: '10.8.8.8', sport: 8080 },
      { id: 'udp 10.8.8.8 59386 10.9.9.9 53', proto: 'udp', timeout: 29, vip: '10.9.9.9', vport: 53, server: '10.8.8.8', sport: 5353 },
    ]);
    expect(parseConntrack(fixture('dnat-ipv6.txt'))).toEqual([
      { id: 'tcp 2001:db8:8::8 60536 2001:db8::9 80', proto: 'tcp', state: 'ESTABLISHED', timeout: 431999, vip: '2001:db8::9', vport: 80, server: '2001:db8:8::8', sport: 8080 },
    ]);
    expect(parseConntrack('icmp     1 29 src=10.0.0.1 dst=10.0.0.2 type=8 code=0 id=1 src=10.0.0.2 dst=10.0.0.1 type=0 code=0 id=1 mark=0 use=1\n')).toEqual([]);
  });

  it('parses conntrack -E events and follows them with one long-running process', async () => {
    expect(parseConntrackEvent(' [UPDATE] tcp      6 432000 ESTABLISHED src=10.8.8.8 dst=10.9.9.9 sport=42682 dport=80 src=10.8.8.8 dst=10.8.8.8 sport=8080 dport=42682 [ASSURED]')).toEqual({
      type: 'update',
      entry: { id: 'tcp 10.8.8.8 42682 10.9.9.9 80', proto: 'tcp', state: 'ESTABLISHED', timeout: 432000, vip: '10.9.9.9', vport: 80, server: '10.8.8.8', sport: 8080 },
    });
    expect(parseConntrackEvent('[DESTROY] tcp      6 src=10.8.8.8 dst=10.9.9.9 sport=42682 dport=80 src=10.8.8.8 dst=10.8.8.8 sport=8080 dport=42682 [ASSURED]')?.type).toBe('destroy');
    expect(parseConntrackEvent('conntrack v1.4.7 (conntrack-tools): 6 flow events have been shown.')).toBeUndefined();

    const runner = new FakeRunner();
    const events: string[] = [];
    const lost: string[] = [];
    const w = new ConntrackAdapter(runner, 'syns').watch({ onEvent: (e) => events.push(`${e.type} ${e.entry.state ?? '-'}`), onLost: (r, ended) => lost.push(`${ended} ${r}`) });
    expect(runner.lines()).toEqual(['[syns] conntrack -E -e NEW,UPDATE,DESTROY --dst-nat']);
    const [stream] = runner.streams;
    stream.line('    [NEW] tcp      6 120 SYN_SENT src=10.8.8.8 dst=10.9.9.9 sport=42682 dport=80 [UNREPLIED] src=10.8.8.8 dst=10.8.8.8 sport=8080 dport=42682');
    stream.stderr('WARNING: We have hit ENOBUFS! We are losing events.');
    stream.end(1);
    await new Promise((r) => setTimeout(r, 0));
    expect(events).toEqual(['new SYN_SENT']);
    expect(lost).toEqual(['false conntrack -E: the kernel dropped events (ENOBUFS)', 'true conntrack -E ended (exit 1)']);
    // Stopped on purpose: not a loss.
    w?.stop();
    const again = new ConntrackAdapter(runner).watch({ onEvent: () => undefined, onLost: (r) => lost.push(r) });
    again?.stop();
    await new Promise((r) => setTimeout(r, 0));
    expect(lost).toHaveLength(2);
  });

  it('the adapter runs one conntrack -L per family, in the namespace', async () => {
    const runner = new FakeRunner().on('conntrack', ['-L', '-f', 'ipv4'], { stdout: fixture('dnat-ipv4.txt') });
    const entries = await new ConntrackAdapter(runner, 'syns').dnatConnections(4);
    expect(entries).toHaveLength(3);
    await new ConntrackAdapter(runner, 'syns').dnatConnections(6);
    expect(runner.lines()).toEqual(['[syns] conntrack -L -f ipv4 --dst-nat', '[syns] conntrack -L -f ipv6 --dst-nat']);
  });
});

const service = (input: object): Service => toService(ServiceInput.parse(input));
const VIP = '10.1.0.9';
const wlc = service({
  host: VIP,
  port: 80,
  scheduler: 'wlc',
  servers: [
    { host: '10.2.0.1', port: 8080, forwarder: 'm' },
    { host: '10.2.0.2', port: 8080, forwarder: 'm' },
  ],
});
const A = '10_2_0_1-8080';
const B = '10_2_0_2-8080';
let cport = 30000;
const conn = (server: string, state: string | undefined, n: number, vip = VIP, vport = 80): ConntrackEntry[] =>
  Array.from({ length: n }, () => ({ id: `tcp 10.9.0.1 ${cport++} ${vip} ${vport}`, proto: 'tcp' as const, ...(state ? { state } : {}), vip, vport, server, sport: 8080 }));

describe('ConnectionFeedback', () => {
  function make(table: FakeConntrack) {
    const changes: string[][] = [];
    const fb = new ConnectionFeedback({ table, intervalMs: 1000, log: silent, onChange: (c) => changes.push([...c]) });
    return { fb, changes };
  }

  it('tracks only services that count connections; reads nothing without one', async () => {
    const table = new FakeConntrack();
    const { fb } = make(table);
    const rr = service({ host: VIP, port: 81, scheduler: 'rr', servers: [{ host: '10.2.0.1', port: 8080, forwarder: 'm' }] });
    expect(needsFeedback(rr)).toBe(false);
    expect(needsFeedback({ ...rr, servers: rr.servers.map((s) => ({ ...s, upper_threshold: 5 })) })).toBe(true);
    fb.setService(rr.id, rr);
    expect(await fb.round()).toEqual([]);
    expect(table.reads).toEqual([]);
    expect(fb.overlay(rr)).toBe(rr);
  });

  it('counts per server, hands on only services whose pick changed, and a failed read changes nothing', async () => {
    const table = new FakeConntrack();
    const { fb, changes } = make(table);
    fb.setService(wlc.id, wlc);
    // No round yet: the service as it is (plain weights).
    expect(fb.overlay(wlc)).toBe(wlc);
    table.entries = [...conn('10.2.0.1', 'ESTABLISHED', 3), ...conn('10.2.0.2', 'ESTABLISHED', 1), ...conn('10.2.0.2', 'TIME_WAIT', 2), ...conn('10.2.0.2', 'ESTABLISHED', 9, VIP, 443)];
    expect(await fb.round()).toEqual([wlc.id]);
    expect((fb.overlay(wlc) as EffectiveService).pick).toEqual([{ id: B, weight: 1 }]);
    expect(table.reads).toEqual([4]);
    // Same counts: nothing to do.
    expect(await fb.round()).toEqual([]);
    table.failNext = new Error('conntrack: command not found');
    expect(await fb.round()).toEqual([]);
    // The pick stays; the service says why its counts are stale (its status shows it).
    const stale = fb.overlay(wlc);
    expect(stale).toMatchObject({ pick: [{ id: B, weight: 1 }], countsUnavailable: 'conntrack: command not found' });
    expect(serviceObjects(stale, { feedback: true }).reports.map((r) => r.message)).toEqual([
      'connection counts unavailable (conntrack: command not found); least-connection and thresholds use the last counts, or the weights',
    ]);
    expect(fb.stats).toMatchObject({ rounds: 3, failed: 1, changes: 1 });
    table.entries = conn('10.2.0.2', 'ESTABLISHED', 4);
    await fb.round();
    expect(fb.overlay(wlc)).not.toHaveProperty('countsUnavailable');
    expect((fb.overlay(wlc) as EffectiveService).pick).toEqual([{ id: A, weight: 1 }]);
    // Pick changes, and the flips to unreadable and back (every followed service is re-reported).
    expect(changes).toEqual([[wlc.id], [wlc.id], [wlc.id], [wlc.id]]);
  });

  it('a server that joins is picked at once from the last counts (it has none)', async () => {
    const table = new FakeConntrack();
    const { fb } = make(table);
    const one = { ...wlc, servers: wlc.servers.slice(0, 1) };
    fb.setService(wlc.id, one);
    table.entries = conn('10.2.0.1', 'ESTABLISHED', 20);
    await fb.round();
    expect((fb.overlay(one) as EffectiveService).pick).toEqual([{ id: A, weight: 1 }]);
    fb.setService(wlc.id, wlc);
    expect((fb.overlay(wlc) as EffectiveService).pick).toEqual([{ id: B, weight: 1 }]);
    fb.setService(wlc.id, undefined);
    expect(fb.size).toBe(0);
  });
});

describe('ConnectionFeedback following conntrack events', () => {
  it('dumps once, then follows events: a round looks only at services whose counts moved and reads nothing', async () => {
    const table = new FakeConntrack(true);
    const changes: string[][] = [];
    const fb = new ConnectionFeedback({ table, intervalMs: 1000, log: silent, onChange: (c) => changes.push([...c]) });
    fb.setService(wlc.id, wlc);
    const [a1, a2] = conn('10.2.0.1', 'ESTABLISHED', 2);
    table.entries = [a1];
    expect(await fb.round()).toEqual([wlc.id]);
    expect(table.reads).toEqual([4]);
    expect((fb.overlay(wlc) as EffectiveService).pick).toEqual([{ id: B, weight: 1 }]);

    // Quiet: no read, no change.
    expect(await fb.round()).toEqual([]);
    expect(table.reads).toEqual([4]);

    // A's connection ends, B gets one that becomes established: B is the busier one now.
    table.emit('destroy', a1);
    const [b1] = conn('10.2.0.2', 'SYN_SENT', 1);
    table.emit('new', b1);
    table.emit('update', { ...b1, state: 'ESTABLISHED' });
    expect(await fb.round()).toEqual([wlc.id]);
    expect((fb.overlay(wlc) as EffectiveService).pick).toEqual([{ id: A, weight: 1 }]);
    expect(table.reads).toEqual([4]);
    expect(fb.stats).toMatchObject({ dumps: 1, events: 3, connections: 1 });

    // Events lost: the next round dumps again. An event during that dump is applied on top of it.
    table.lose('ENOBUFS');
    table.duringNextRead = () => table.emit('new', { ...a2, state: 'ESTABLISHED' });
    await fb.round();
    expect(table.reads).toEqual([4, 4]);
    expect(fb.stats.connections).toBe(2);
    expect((fb.overlay(wlc) as EffectiveService).pick).toEqual([{ id: A, weight: 1 }, { id: B, weight: 1 }]);

    // The watch ended: the next round starts another one and dumps.
    table.lose('exit', true);
    await fb.round();
    expect(table.reads).toEqual([4, 4, 4]);
    table.emit('destroy', b1);
    expect(await fb.round()).toEqual([wlc.id]);
    expect((fb.overlay(wlc) as EffectiveService).pick).toEqual([{ id: B, weight: 1 }]);
    await fb.stop();
  });

  it('a closing connection leaves the counts when its conntrack timeout runs out, before any destroy event', async () => {
    const table = new FakeConntrack(true);
    const fb = new ConnectionFeedback({ table, intervalMs: 1000, log: silent, onChange: () => undefined });
    fb.setService(wlc.id, wlc);
    const [a] = conn('10.2.0.1', 'ESTABLISHED', 1);
    table.entries = [a];
    await fb.round();
    expect((fb.overlay(wlc) as EffectiveService).pick).toEqual([{ id: B, weight: 1 }]);
    table.emit('update', { ...a, state: 'TIME_WAIT', timeout: 0 });
    await new Promise((r) => setTimeout(r, 120));
    await fb.round();
    expect(fb.stats.connections).toBe(0);
    expect((fb.overlay(wlc) as EffectiveService).pick).toEqual([{ id: A, weight: 1 }, { id: B, weight: 1 }]);
    // An established one has no such deadline.
    table.emit('new', { ...a, timeout: 0 });
    await new Promise((r) => setTimeout(r, 120));
    await fb.round();
    expect(fb.stats.connections).toBe(1);
  });

  it('a service followed anew is counted from a dump (its earlier events were not followed)', async () => {
    const table = new FakeConntrack(true);
    const fb = new ConnectionFeedback({ table, intervalMs: 1000, log: silent, onChange: () => undefined });
    const rr = service({ host: '10.1.0.7', port: 80, scheduler: 'wlc', servers: [{ host: '10.2.0.1', port: 80, forwarder: 'm' }] });
    fb.setService(rr.id, rr);
    await fb.round();
    table.entries = conn('10.2.0.1', 'ESTABLISHED', 3);
    fb.setService(wlc.id, wlc);
    await fb.round();
    expect(table.reads).toEqual([4, 4]);
    expect((fb.overlay(wlc) as EffectiveService).pick).toEqual([{ id: B, weight: 1 }]);
  });
});

describe('nft objects of a pick', () => {
  const persistent = service({
    host: '10.1.0.8',
    port: 443,
    scheduler: 'lc',
    persistence: 60,
    servers: [
      { host: '10.2.0.1', port: 443, forwarder: 'm', upper_threshold: 2 },
      { host: '10.2.0.2', port: 443, forwarder: 'm' },
    ],
  });
  const script = (desired: Map<string, ServiceObjects>, before: Map<string, ServiceObjects>, id: string) => {
    const observed = emptyObserved();
    for (const [sid, o] of before) observed.services.set(sid, { digest: o.digest, chains: new Map(o.chains.map((c) => [c.name, c.rules.length])), sets: new Map(o.sets.map((s) => [s.name, s.spec])), elements: o.elements });
    observed.table = true;
    return renderNftScript('switchyard', planNft({ desired, observed, scope: new Set([id]) }))
      .split('\n')
      // Without the table skeleton (planned too, since `observed` has none).
      .filter((l) => l && !/^add (table|map) |^add (chain|rule) inet switchyard (prerouting|output|postrouting)\b/.test(l));
  };

  it('a changed pick rewrites only slot elements', () => {
    const before = new Map([[wlc.id, serviceObjects(wlc).objects]]);
    const after = new Map([[wlc.id, serviceObjects({ ...wlc, pick: [{ id: B, weight: 1 }] }).objects]]);
    expect(script(after, before, wlc.id)).toEqual([
      'delete element inet switchyard services4 { 10.1.0.9 . tcp . 80 }',
      'delete element inet switchyard backends4_tcp { 10.1.0.9 . 80 . 0, 10.1.0.9 . 80 . 1 }',
      'add chain inet switchyard grp.numgen-random.1.tcp4.masq',
      'add rule inet switchyard grp.numgen-random.1.tcp4.masq meta mark set meta mark | 0x00100000 dnat ip to ip daddr . tcp dport . numgen random mod 1 map @backends4_tcp',
      // (Element additions come grouped by map, in map order.)
      'add element inet switchyard backends4_tcp { 10.1.0.9 . 80 . 0 : 10.2.0.2 . 8080 }',
      'add element inet switchyard services4 { 10.1.0.9 . tcp . 80 : goto grp.numgen-random.1.tcp4.masq }',
    ]);
  });

  it('every server overloaded: new connections are rejected', () => {
    const o = serviceObjects({ ...wlc, pick: [] }).objects;
    expect(o.groups).toEqual([{ name: 'grp.reject', rules: ['reject'] }]);
    expect(o.elements).toEqual([{ map: 'services4', key: '10.1.0.9 . tcp . 80', value: 'goto grp.reject' }]);
    // No server of weight > 0: the VIP is not rewritten at all (as before).
    const none = { ...wlc, servers: wlc.servers.map((s) => ({ ...s, weight: 0 })) };
    expect(serviceObjects({ ...none, pick: [] }).objects.elements).toEqual([]);
  });

  it('persistence: every server keeps its chain and affinity set; only the pick map follows the pick', () => {
    const all = serviceObjects(persistent).objects;
    const onlyB = serviceObjects({ ...persistent, pick: [{ id: '10_2_0_2-443', weight: 1 }] }).objects;
    expect(onlyB.sets).toEqual(all.sets);
    expect(onlyB.chains.map((c) => c.name)).toEqual(all.chains.map((c) => c.name));
    expect(onlyB.elements.filter((e) => e.map === 'pick4_tcp')).toEqual([{ map: 'pick4_tcp', key: '10.1.0.8 . 443 . 0', value: 'goto ep.tcp-10_1_0_8-443.10_2_0_2-443' }]);
    const rejecting = serviceObjects({ ...persistent, pick: [] }).objects;
    expect(rejecting.chains[0].rules.slice(1)).toEqual([
      'ip saddr @aff.tcp-10_1_0_8-443.10_2_0_1-443 goto ep.tcp-10_1_0_8-443.10_2_0_1-443',
      'ip saddr @aff.tcp-10_1_0_8-443.10_2_0_2-443 goto ep.tcp-10_1_0_8-443.10_2_0_2-443',
      'reject',
    ]);
  });

  it('warns about least-connection and thresholds only when the feedback is off', () => {
    expect(serviceObjects(persistent, { feedback: true }).reports).toEqual([]);
    expect(serviceObjects(persistent, { feedback: false }).reports.map((r) => r.message)).toEqual([
      'scheduler lc needs connection counts and the feedback is off; using the weights',
      'server 10_2_0_1-443: connection thresholds need connection counts and the feedback is off; not enforced',
    ]);
  });

  it('the dataplane applies a new pick of the same service as an incremental element change', async () => {
    const runner = new FakeRunner().on('nft', ['-j', 'list'], { exitCode: 1, stderr: 'Error: No such file or directory' });
    const dp = new NftDataplane(new NftExecutor(runner, { table: 'switchyard' }), 'switchyard', silent, { feedback: true });
    expect(await dp.sync(new Map([[wlc.id, wlc]]))).toMatchObject({ failed: false, reports: new Map([[wlc.id, []]]) });
    runner.clear();
    await dp.sync(new Map([[wlc.id, { ...wlc, pick: [{ id: A, weight: 1 }] }]]), new Set([wlc.id]));
    const input = runner.calls.find((c) => c.args[0] === '-f')?.input ?? '';
    expect(input.split('\n').filter(Boolean)).toEqual([
      'delete element inet switchyard services4 { 10.1.0.9 . tcp . 80 }',
      'delete element inet switchyard backends4_tcp { 10.1.0.9 . 80 . 1 }',
      'add chain inet switchyard grp.numgen-random.1.tcp4.masq',
      'add rule inet switchyard grp.numgen-random.1.tcp4.masq meta mark set meta mark | 0x00100000 dnat ip to ip daddr . tcp dport . numgen random mod 1 map @backends4_tcp',
      'add element inet switchyard services4 { 10.1.0.9 . tcp . 80 : goto grp.numgen-random.1.tcp4.masq }',
    ]);
  });
});
