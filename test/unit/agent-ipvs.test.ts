/**
 * The ipvs dataplane without a kernel: golden plans from fixtures (the exact
 * `ipvsadm -R` lines), the -Sn/-Ln parsers, and the executor's argv + stdin
 * against the fake runner.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ServiceInput, toService, type Service } from '@switchyard/shared';
import { FakeRunner } from '../../packages/agent/src/exec/runner.js';
import {
  desiredVirtuals,
  IpvsExecutor,
  ipvsadmLine,
  parseIpvsConnections,
  parseIpvsRules,
  parseIpvsThresholds,
  planIpvs,
  renderIpvsRules,
  virtualKey,
  type IpvsOp,
} from '../../packages/agent/src/l4/ipvs/index.js';

const dir = new URL('../fixtures/agent/ipvs/', import.meta.url);

interface Fixture {
  description: string;
  services: unknown[];
  observed: string;
  owned: string[];
  addresses: string[];
  expected: string[];
  reports: string[];
}

function services(raw: unknown[]): Service[] {
  return raw.map((s) => toService(ServiceInput.parse(s)));
}

function render(op: IpvsOp): string {
  return ipvsadmLine(op) ?? `ip: ${op.kind} ${'address' in op ? op.address : ''}`;
}

describe('ipvs planner golden fixtures', () => {
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
    const fx = JSON.parse(readFileSync(new URL(file, dir), 'utf8')) as Fixture;
    it(`${file}: ${fx.description}`, () => {
      const { virtuals, reports } = desiredVirtuals(services(fx.services));
      const plan = planIpvs({ desired: virtuals, observed: parseIpvsRules(fx.observed), owned: new Set(fx.owned), observedAddresses: fx.addresses, now: 1000 });
      expect(plan.ops.map(render)).toEqual(fx.expected);
      expect(reports.map((r) => `${r.level} ${r.serviceId}: ${r.message}`)).toEqual(fx.reports);
      // Ownership afterwards: exactly the desired services.
      expect([...plan.owned].sort()).toEqual(virtuals.map(virtualKey).sort());
    });
  }

  it('applying the plan to the observed state leaves nothing to do (idempotence)', () => {
    const fx = JSON.parse(readFileSync(new URL('all-schedulers.json', dir), 'utf8')) as Fixture;
    const { virtuals } = desiredVirtuals(services(fx.services));
    // What the kernel would print after the apply is the rendered desired state.
    const observed = parseIpvsRules(renderIpvsRules(virtuals));
    expect(observed).toEqual(virtuals);
    const plan = planIpvs({ desired: virtuals, observed, owned: new Set(), observedAddresses: virtuals.map((v) => v.address) });
    expect(plan.ops).toEqual([]);
  });

  it('never touches a foreign service that is not desired', () => {
    const observed = parseIpvsRules('-A -t 192.168.1.1:80 -s rr\n-a -t 192.168.1.1:80 -r 192.168.1.2:80 -m -w 1\n');
    const plan = planIpvs({ desired: [], observed, owned: new Set(), observedAddresses: [] });
    expect(plan.ops).toEqual([]);
  });
});

describe('ipvs server drain', () => {
  const before = services([{ host: '10.1.0.1', port: 80, scheduler: 'rr', servers: [{ host: '10.2.0.1', port: 80, forwarder: 'm' }, { host: '10.2.0.2', port: 80, forwarder: 'm' }] }]);
  const after = services([{ host: '10.1.0.1', port: 80, scheduler: 'rr', servers: [{ host: '10.2.0.1', port: 80, forwarder: 'm' }] }]);
  const observed = desiredVirtuals(before).virtuals;
  const desired = desiredVirtuals(after).virtuals;
  const owned = new Set(['tcp 10.1.0.1:80']);
  const key = 'tcp 10.1.0.1:80 -> 10.2.0.2:80';

  it('quiesces a deleted server while it has connections', () => {
    const plan = planIpvs({ desired, observed, owned, observedAddresses: ['10.1.0.1'], connections: new Map([[key, 3]]), now: 5000 });
    expect(plan.ops.map(render)).toEqual(['-e -t 10.1.0.1:80 -r 10.2.0.2:80 -m -w 0 -x 0 -y 0']);
    expect([...plan.draining]).toEqual([[key, 5000]]);
  });

  it('removes it once its connections are gone', () => {
    const quiesced = parseIpvsRules('-A -t 10.1.0.1:80 -s rr\n-a -t 10.1.0.1:80 -r 10.2.0.1:80 -m -w 1\n-a -t 10.1.0.1:80 -r 10.2.0.2:80 -m -w 0\n');
    const still = planIpvs({ desired, observed: quiesced, owned, observedAddresses: ['10.1.0.1'], draining: new Map([[key, 5000]]), connections: new Map([[key, 1]]), now: 6000 });
    expect(still.ops).toEqual([]);
    const done = planIpvs({ desired, observed: quiesced, owned, observedAddresses: ['10.1.0.1'], draining: new Map([[key, 5000]]), connections: new Map([[key, 0]]), now: 7000 });
    expect(done.ops.map(render)).toEqual(['-d -t 10.1.0.1:80 -r 10.2.0.2:80']);
    expect(done.draining.size).toBe(0);
  });

  it('removes it after the drain timeout even with connections left', () => {
    const plan = planIpvs({ desired, observed, owned, observedAddresses: ['10.1.0.1'], draining: new Map([[key, 0]]), connections: new Map([[key, 9]]), now: 30_000, drainTimeoutMs: 30_000 });
    expect(plan.ops.map(render)).toEqual(['-d -t 10.1.0.1:80 -r 10.2.0.2:80']);
  });
});

describe('ipvsadm parsers', () => {
  it('reads -Ln connection counters per destination', () => {
    const text = [
      'IP Virtual Server version 1.2.1 (size=4096)',
      'Prot LocalAddress:Port Scheduler Flags',
      '  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn',
      'TCP  10.1.0.1:80 rr',
      '  -> 10.2.0.1:80                  Masq    1      2          3',
      'UDP  [2001:db8::1]:53 wrr persistent 60',
      '  -> [2001:db8::5]:53             Masq    1      0          0',
      'FWM  7 rr',
      '  -> 10.9.9.9:80                  Route   1      4          4',
    ].join('\n');
    expect([...parseIpvsConnections(text)]).toEqual([
      ['tcp 10.1.0.1:80 -> 10.2.0.1:80', 5],
      ['udp [2001:db8::1]:53 -> [2001:db8::5]:53', 0],
    ]);
  });

  it('reads thresholds from -Ln --thresholds (ipvsadm -Sn never prints -x/-y)', () => {
    const text = [
      'IP Virtual Server version 1.2.1 (size=4096)',
      'Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn',
      '  -> RemoteAddress:Port',
      'TCP  10.1.0.1:80 wlc',
      '  -> 10.2.0.1:80                  100        20         0          0',
      '  -> 10.2.0.2:80                  0          0          7          1',
      'UDP  [2001:db8::1]:53 rr',
      '  -> [2001:db8::5]:53             5          0          0          0',
    ].join('\n');
    expect([...parseIpvsThresholds(text)]).toEqual([
      ['tcp 10.1.0.1:80 -> 10.2.0.1:80', { upper: 100, lower: 20 }],
      ['tcp 10.1.0.1:80 -> 10.2.0.2:80', { upper: 0, lower: 0 }],
      ['udp [2001:db8::1]:53 -> [2001:db8::5]:53', { upper: 5, lower: 0 }],
    ]);
  });

  it('skips firewall-mark services and reads defaults', () => {
    expect(parseIpvsRules('-A -f 7 -s rr\n-a -f 7 -r 10.0.0.1:0 -g -w 1\n-A -t 10.0.0.1:80 -s wlc -p\n')).toEqual([
      { protocol: 'tcp', address: '10.0.0.1', port: 80, scheduler: 'wlc', persistence: 300, netmask: '', dests: [] },
    ]);
  });
});

describe('ipvs executor', () => {
  it('adds addresses on its dummy device, then applies one ipvsadm -R batch', async () => {
    const runner = new FakeRunner().on('ip', ['-j', '-d', 'link', 'show'], { exitCode: 1, stderr: 'Device "sy-ipvs0" does not exist.' });
    const exec = new IpvsExecutor(runner, { netns: 'sylb' });
    const { virtuals } = desiredVirtuals(services([{ host: '10.1.0.1', port: 80, scheduler: 'rr', servers: [{ host: '10.2.0.1', port: 80, forwarder: 'm' }] }]));
    const plan = planIpvs({ desired: virtuals, observed: [], owned: new Set(), observedAddresses: [] });
    await exec.apply(plan.ops);
    expect(runner.calls).toEqual([
      { cmd: 'ip', args: ['-j', '-d', 'link', 'show', 'dev', 'sy-ipvs0'], netns: 'sylb' },
      { cmd: 'ip', args: ['-batch', '-'], input: 'link add sy-ipvs0 type dummy\nlink set sy-ipvs0 up\n', netns: 'sylb' },
      { cmd: 'ip', args: ['-batch', '-'], input: 'address replace 10.1.0.1/32 dev sy-ipvs0\n', netns: 'sylb' },
      { cmd: 'ipvsadm', args: ['-R'], input: '-A -t 10.1.0.1:80 -s rr\n-a -t 10.1.0.1:80 -r 10.2.0.1:80 -m -w 1\n', netns: 'sylb' },
    ]);
  });

  it('removes a service address after the last service using it is deleted', async () => {
    const runner = new FakeRunner().on('ip', ['-j', 'addr', 'show'], {
      stdout: JSON.stringify([{ ifname: 'sy-ipvs0', addr_info: [{ family: 'inet', local: '10.1.0.1', prefixlen: 32 }] }]),
    });
    const exec = new IpvsExecutor(runner);
    const observed = parseIpvsRules('-A -t 10.1.0.1:80 -s rr\n');
    const plan = planIpvs({ desired: [], observed, owned: new Set(['tcp 10.1.0.1:80']), observedAddresses: ['10.1.0.1'] });
    await exec.apply(plan.ops);
    expect(runner.lines()).toEqual(['ipvsadm -R', 'ip -j addr show dev sy-ipvs0', 'ip -batch -']);
    expect(runner.calls[0].input).toBe('-D -t 10.1.0.1:80\n');
    expect(runner.calls[2].input).toBe('address del 10.1.0.1/32 dev sy-ipvs0\n');
  });

  it('observes thresholds and ignores the link-local address of its device', async () => {
    const runner = new FakeRunner()
      .on('ipvsadm', ['-Sn'], { stdout: '-A -t 10.1.0.1:80 -s wlc\n-a -t 10.1.0.1:80 -r 10.2.0.1:80 -m -w 1\n' })
      .on('ipvsadm', ['-Ln', '--thresholds'], { stdout: 'TCP  10.1.0.1:80 wlc\n  -> 10.2.0.1:80   50   10   0   0\n' })
      .on('ip', ['-j', 'addr', 'show'], {
        stdout: JSON.stringify([{ ifname: 'sy-ipvs0', addr_info: [{ family: 'inet', local: '10.1.0.1', prefixlen: 32 }, { family: 'inet6', local: 'fe80::3c1a:ff:fe00:1', prefixlen: 64 }] }]),
      });
    const seen = await new IpvsExecutor(runner).observe();
    expect(seen.addresses).toEqual(['10.1.0.1']);
    expect(seen.virtuals[0].dests[0]).toMatchObject({ upperThreshold: 50, lowerThreshold: 10 });
  });

  it('fails when ipvsadm -R refuses a line but exits 0 (it goes on past failing lines)', async () => {
    const runner = new FakeRunner().on('ipvsadm', ['-R'], { exitCode: 0, stderr: 'Numerical result out of range' });
    const exec = new IpvsExecutor(runner);
    await expect(exec.apply([{ kind: 'delete-service', service: { protocol: 'tcp', address: '10.0.0.1', port: 80, scheduler: 'rr', persistence: 0, netmask: '' } }])).rejects.toThrow(
      /refused part of the batch: Numerical result out of range/,
    );
  });

  it('drops a lower threshold without an upper one (the kernel refuses it), with a warning', () => {
    const { virtuals, reports } = desiredVirtuals(services([{ host: '10.1.0.1', port: 80, servers: [{ host: '10.2.0.1', port: 80, lower_threshold: 50 }] }]));
    expect(virtuals[0].dests[0]).toMatchObject({ upperThreshold: 0, lowerThreshold: 0 });
    expect(reports.map((r) => r.message)).toEqual([expect.stringMatching(/lower threshold 50 is above the upper threshold 0/)]);
  });

  it('puts ipvsadm\'s stderr into the error', async () => {
    const runner = new FakeRunner().on('ipvsadm', ['-R'], { exitCode: 2, stderr: 'Scheduler or persistence engine not found' });
    const exec = new IpvsExecutor(runner);
    await expect(exec.apply([{ kind: 'delete-service', service: { protocol: 'tcp', address: '10.0.0.1', port: 80, scheduler: 'rr', persistence: 0, netmask: '' } }])).rejects.toThrow(
      /ipvsadm -R failed \(exit 2\): Scheduler or persistence engine not found/,
    );
  });
});
