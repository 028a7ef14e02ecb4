/**
 * The nftables dataplane without a kernel: the exact script for a fixture
 * set of services, the JSON a real `nft -j list table` printed after that
 * script was applied (captured into the fixture) read back into a state that
 * needs no further ops, incremental scripts that name only the changed
 * service, and the executor's argv + stdin against the fake runner. Then the
 * dataplane and the sync loop around a slow table read-back: changes keep
 * applying while it runs, and the full pass after it still undoes drift.
 */
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { ServiceInput, toService, type Service } from '@switchyard/shared';
import { FakeRunner, type RunOptions, type Runner, type RunResult } from '../../packages/agent/src/exec/runner.js';
import { DeviceAddresses, planAddresses } from '../../packages/agent/src/l4/local-addresses.js';
import { NftDataplane } from '../../packages/agent/src/l4/nftables/dataplane.js';
import { SyncLoop } from '../../packages/agent/src/loop.js';
import { AgentConfig } from '../../packages/agent/src/config.js';
import { startAgent } from '../../packages/agent/src/agent.js';
import {
  drBase,
  emptyObserved,
  NFT_BASE,
  NftExecutor,
  observedOf,
  parseNftJson,
  planNft,
  planTables,
  renderNftScript,
  serviceObjects,
  slotCounts,
  slotSequence,
  type NftObserved,
  type ServiceObjects,
} from '../../packages/agent/src/l4/nftables/index.js';

const dir = new URL('../fixtures/agent/nftables/', import.meta.url);
const read = (f: string) => readFileSync(new URL(f, dir), 'utf8');
const services: Service[] = (JSON.parse(read('services.json')) as unknown[]).map((s) => toService(ServiceInput.parse(s)));
const desired = new Map<string, ServiceObjects>(services.map((s) => [s.id, serviceObjects(s).objects]));
const parse = (json: string) => parseNftJson(json, NFT_BASE.chains.map((c) => c.name), NFT_BASE.maps.map((m) => m.name));

function modelOf(objects: Map<string, ServiceObjects>): NftObserved {
  const m = parse(read('observed-after-full.json'));
  m.services.clear();
  for (const [id, o] of objects) m.services.set(id, observedOf(o));
  return m;
}

describe('nftables planner', () => {
  it('renders the golden script for the fixture services on an empty kernel', () => {
    expect(renderNftScript('switchyard', planNft({ desired, observed: emptyObserved() }))).toBe(read('full-from-empty.nft'));
  });

  it('reads back what nft printed after applying it, and then has nothing to do', () => {
    const observed = parse(read('observed-after-full.json'));
    expect([...observed.services.keys()].sort()).toEqual([...desired.values()].filter((o) => o.elements.length > 0).map((o) => o.id).sort());
    expect(planNft({ desired, observed })).toEqual([]);
  });

  it('an incremental change names only the changed service', () => {
    const changed = services.find((s) => s.id === 'tcp-10_1_0_1-80') as Service;
    const next = new Map(desired);
    next.set(changed.id, serviceObjects({ ...changed, servers: changed.servers.slice(0, 1) }).objects);
    const script = renderNftScript('switchyard', planNft({ desired: next, observed: modelOf(desired), scope: new Set([changed.id]) }));
    expect(script).toBe(
      [
        'delete element inet switchyard services4 { 10.1.0.1 . tcp . 80 }',
        // slot 0 keeps its server: only slot 1 goes.
        'delete element inet switchyard backends4_tcp { 10.1.0.1 . 80 . 1 }',
        'add chain inet switchyard grp.numgen-inc.1.tcp4.masq',
        'add rule inet switchyard grp.numgen-inc.1.tcp4.masq meta mark set meta mark | 0x00100000 dnat ip to ip daddr . tcp dport . numgen inc mod 1 map @backends4_tcp',
        'add element inet switchyard services4 { 10.1.0.1 . tcp . 80 : goto grp.numgen-inc.1.tcp4.masq }',
        '',
      ].join('\n'),
    );
  });

  it('deleting a persistent service removes its elements, chains and affinity sets in one script', () => {
    const gone = 'tcp-10_1_0_2-443';
    const next = new Map(desired);
    next.delete(gone);
    const script = renderNftScript('switchyard', planNft({ desired: next, observed: modelOf(desired), scope: new Set([gone]) }));
    expect(script.split('\n').filter(Boolean)).toEqual([
      'delete element inet switchyard services4 { 10.1.0.2 . tcp . 443 }',
      'delete element inet switchyard pick4_tcp { 10.1.0.2 . 443 . 0, 10.1.0.2 . 443 . 1 }',
      `flush chain inet switchyard svc.${gone}`,
      `flush chain inet switchyard ep.${gone}.10_2_0_6-443`,
      `flush chain inet switchyard ep.${gone}.10_2_0_7-443`,
      `delete chain inet switchyard svc.${gone}`,
      `delete chain inet switchyard ep.${gone}.10_2_0_6-443`,
      `delete chain inet switchyard ep.${gone}.10_2_0_7-443`,
      `delete set inet switchyard aff.${gone}.10_2_0_6-443`,
      `delete set inet switchyard aff.${gone}.10_2_0_7-443`,
    ]);
  });

  it('a full pass deletes group chains no service uses any more', () => {
    const observed = modelOf(desired);
    const ops = planNft({ desired: new Map(), observed });
    expect(ops.filter((o) => o.kind === 'delete-chain').map((o) => ('name' in o ? o.name : ''))).toEqual(expect.arrayContaining(['grp.numgen-inc.2.tcp4.masq', 'grp.numgen-inc.3.udp4']));
  });

  it('warns where nftables cannot do what IPVS would', () => {
    const reports = services.flatMap((s) => serviceObjects(s).reports).map((r) => `${r.serviceId}: ${r.message}`);
    expect(reports).toEqual([
      'udp-10_1_0_1-53: server 10_2_0_3-53: forwarder g is applied as DNAT without masquerade (direct routing needs --nft-dr-device)',
      'udp-10_1_0_1-53: server 10_2_0_4-53: forwarder g is applied as DNAT without masquerade (direct routing needs --nft-dr-device)',
      'udp-10_1_0_1-53: server 10_2_0_5-53: forwarder g is applied as DNAT without masquerade (direct routing needs --nft-dr-device)',
      'tcp-10_1_0_3-80: scheduler wlc needs connection counts and the feedback is off; using the weights',
      'tcp-10_1_0_3-80: server 10_2_0_8-80: connection thresholds need connection counts and the feedback is off; not enforced',
      'tcp-2001_db8__1-80: server 2001_db8_1__6-8080: forwarder g is applied as DNAT without masquerade (direct routing needs --nft-dr-device)',
    ]);
    // With the connection feedback (the agent's default), wlc and thresholds are honoured: only forwarders remain.
    const withFeedback = services.flatMap((s) => serviceObjects(s, { feedback: true }).reports).map((r) => r.message);
    expect(withFeedback.every((m) => m.includes('forwarder g'))).toBe(true);
    expect(withFeedback).toHaveLength(4);
  });
});

describe('direct routing (--nft-dr-device)', () => {
  const DEV = 'eth1';
  const drServices = [...services, ...(JSON.parse(read('services-dr.json')) as unknown[]).map((s) => toService(ServiceInput.parse(s)))];
  const drDesired = new Map<string, ServiceObjects>(drServices.map((s) => [s.id, serviceObjects(s, { drDevice: DEV }).objects]));
  const parseDr = (json: string) => parseNftJson(json, drBase(DEV).chains.map((c) => c.name), drBase(DEV).maps.map((m) => m.name));
  /** The inet table as the planner wrote it for `objects` (its fixture listing stands for the skeleton). */
  const inetModel = (objects: Map<string, ServiceObjects>) => modelOf(new Map([...objects].filter(([, o]) => o.family === 'inet')));

  it('puts services whose servers all use g in the netdev table, in the same transaction as the inet table', () => {
    const script = renderNftScript('switchyard', planTables({ desired: drDesired, observed: emptyObserved(), observedDr: emptyObserved(), drDevice: DEV }));
    expect(script).toBe(read('dr-full-from-empty.nft'));
  });

  it('reads back what nft printed after applying it (both tables, captured from this kernel), and then has nothing to do', () => {
    const observedDr = parseDr(read('dr-observed-after-full.json'));
    expect(observedDr.device).toBe(DEV);
    expect([...observedDr.services.keys()].sort()).toEqual(['tcp-10_1_0_5-80', 'tcp-10_1_0_6-443', 'tcp-10_1_0_8-80', 'tcp-2001_db8__1-80', 'tcp-2001_db8__2-80', 'udp-10_1_0_1-53', 'udp-10_1_0_7-53']);
    expect(planTables({ desired: drDesired, observed: parse(read('dr-observed-inet-after-full.json')), observedDr, drDevice: DEV })).toEqual([]);
  });

  it('a full pass undoes drift in the netdev table: a slot deleted, a stray service added', () => {
    const doc = JSON.parse(read('dr-observed-after-full.json')) as { nftables: { map?: { name: string; elem?: unknown[] } }[] };
    for (const item of doc.nftables) {
      if (item.map?.name === 'fwd4_tcp') item.map.elem = item.map.elem?.filter((e) => !JSON.stringify(e).includes('"10.2.0.9"'));
      if (item.map?.name === 'services4') item.map.elem?.push([{ concat: ['10.9.9.9', 'tcp', 80] }, { goto: { target: 'grp.fwd-flow.4.tcp4' } }]);
    }
    const observedDr = parseDr(JSON.stringify(doc));
    const script = renderNftScript('switchyard', planTables({ desired: drDesired, observed: parse(read('dr-observed-inet-after-full.json')), observedDr, drDevice: DEV }));
    expect(script.split('\n').filter(Boolean)).toEqual([
      'delete element netdev switchyard services4 { 10.9.9.9 . tcp . 80 }',
      'add element netdev switchyard fwd4_tcp { 10.1.0.5 . 80 . 1 : 10.2.0.9 }',
    ]);
  });

  it('a service that starts routing directly gains its netdev part; its inet DNAT (for what ingress never sees) is unchanged', () => {
    const id = 'udp-10_1_0_1-53';
    const before = new Map(desired);
    const observedDr = parseDr(read('dr-observed-after-full.json'));
    observedDr.services.delete(id);
    const script = renderNftScript('switchyard', planTables({ desired: drDesired, observed: modelOf(before), observedDr, scope: new Set([id]), drDevice: DEV }));
    // (Element additions come grouped by map, in map order.)
    expect(script.split('\n').filter(Boolean)).toEqual([
      'add element netdev switchyard fwd4_udp { 10.1.0.1 . 53 . 0 : 10.2.0.3, 10.1.0.1 . 53 . 1 : 10.2.0.4, 10.1.0.1 . 53 . 2 : 10.2.0.3 }',
      'add element netdev switchyard services4 { 10.1.0.1 . udp . 53 : goto grp.fwd-flow.3.udp4 }',
    ]);
  });

  it('a service mixing g with m: the g servers own their slots in the netdev table, the other slots fall through to DNAT among the others', () => {
    const mixed = drDesired.get('tcp-10_1_0_8-80') as ServiceObjects;
    expect(mixed.family).toBe('inet');
    // 2 slots (rr): slot 0 routes directly to 10.2.0.15; slot 1 has no address, so its packets go on to the inet table.
    expect(mixed.dr?.elements).toEqual([
      { map: 'services4', key: '10.1.0.8 . tcp . 80', value: 'goto grp.fwd-flow.2.tcp4' },
      { map: 'fwd4_tcp', key: '10.1.0.8 . 80 . 0', value: '10.2.0.15' },
    ]);
    expect(mixed.elements).toEqual([
      { map: 'services4', key: '10.1.0.8 . tcp . 80', value: 'goto grp.numgen-inc.1.tcp4.masq' },
      { map: 'backends4_tcp', key: '10.1.0.8 . 80 . 0', value: '10.2.0.16 . 80' },
    ]);
    // Deleting it removes both parts in one script.
    const next = new Map(drDesired);
    next.delete(mixed.id);
    const observedDr = parseDr(read('dr-observed-after-full.json'));
    const script = renderNftScript('switchyard', planTables({ desired: next, observed: inetModel(drDesired), observedDr, scope: new Set([mixed.id]), drDevice: DEV }));
    expect(script.split('\n').filter(Boolean)).toEqual([
      'delete element inet switchyard services4 { 10.1.0.8 . tcp . 80 }',
      'delete element inet switchyard backends4_tcp { 10.1.0.8 . 80 . 0 }',
      'delete element netdev switchyard services4 { 10.1.0.8 . tcp . 80 }',
      'delete element netdev switchyard fwd4_tcp { 10.1.0.8 . 80 . 0 }',
    ]);
  });

  it('a netdev table hooked on another device is replaced as a whole', () => {
    const observedDr = parseDr(read('dr-observed-after-full.json'));
    const onEth2 = new Map(drServices.map((s) => [s.id, serviceObjects(s, { drDevice: 'eth2' }).objects]));
    const lines = renderNftScript('switchyard', planTables({ desired: onEth2, observed: inetModel(onEth2), observedDr, drDevice: 'eth2' })).split('\n');
    expect(lines.filter((l) => l.includes(' netdev ')).slice(0, 2)).toEqual(['delete table netdev switchyard', 'add table netdev switchyard']);
    expect(lines).toContain('add chain netdev switchyard ingress.eth2 { type filter hook ingress device "eth2" priority 0 ; policy accept ; }');
    expect(lines).toContain('add rule netdev switchyard grp.fwd-flow.4.tcp4 fwd ip to ip daddr . tcp dport . jhash ip saddr . tcp sport mod 4 seed 0x5359 map @fwd4_tcp device "eth2"');
  });

  it('--nft-dr-ingress: traffic arriving on other devices, the real servers on the DR device; a change of devices replaces the table', () => {
    const twoArm = renderNftScript('switchyard', planTables({ desired: drDesired, observed: inetModel(drDesired), observedDr: emptyObserved(), drDevice: DEV, drIngress: ['eth0'] }));
    expect(twoArm).toContain('add chain netdev switchyard ingress.eth1/eth0 { type filter hook ingress device "eth0" priority 0 ; policy accept ; }\n');
    expect(twoArm).toContain('fwd ip to ip daddr . tcp dport . jhash ip saddr . tcp sport mod 4 seed 0x5359 map @fwd4_tcp device "eth1"');
    const several = drBase(DEV, ['eth0', 'eth2']).chains[0];
    expect([several.name, several.spec]).toEqual(['ingress.eth1/eth0/eth2', 'type filter hook ingress devices = { "eth0", "eth2" } priority 0 ;']);
    // The one-device table (the fixture) is replaced by the two-arm one in one transaction.
    const observedDr = parseDr(read('dr-observed-after-full.json'));
    const ops = planTables({ desired: drDesired, observed: inetModel(drDesired), observedDr, drDevice: DEV, drIngress: ['eth0', 'eth2'] }).filter((o) => o.family === 'netdev');
    expect(ops.slice(0, 2).map((o) => o.kind)).toEqual(['delete-table', 'add-table']);
    // Read back with the same devices, nothing to do.
    const sameDevices = parseNftJson(read('dr-observed-after-full.json'), drBase(DEV, [DEV]).chains.map((c) => c.name), drBase(DEV).maps.map((m) => m.name));
    expect(planTables({ desired: drDesired, observed: inetModel(drDesired), observedDr: sameDevices, drDevice: DEV, drIngress: [DEV] }).filter((o) => o.family === 'netdev')).toEqual([]);
  });

  it('a rejected transaction is retried service by service in both tables; the bad service carries the error', async () => {
    const bad = 'tcp-10_1_0_6-443';
    const scripts: string[] = [];
    const r = new FakeRunner()
      .on('nft', ['-j', 'list'], { exitCode: 1, stderr: 'Error: No such file or directory' })
      .on('nft', ['-f'], (call) => {
        scripts.push(call.input ?? '');
        return (call.input ?? '').includes('10.1.0.6 . tcp . 443') ? { exitCode: 1, stderr: 'Error: Could not process rule' } : {};
      });
    const dp = new NftDataplane(new NftExecutor(r, { table: 'switchyard' }), 'switchyard', silent, { drDevice: DEV });
    const out = await dp.sync(new Map(drServices.map((s) => [s.id, s])));
    expect(out.failed).toBe(true);
    expect(out.reports.get(bad)?.at(-1)).toMatchObject({ level: 'error', message: expect.stringContaining('nftables rejected the service') });
    // The whole plan, then both skeletons alone, then one script per service.
    expect(scripts[1]).toContain('add table inet switchyard\n');
    expect(scripts[1]).toContain('add chain netdev switchyard ingress.eth1 {');
    expect(scripts[1]).not.toContain('add element');
    // (10.1.0.4:80 has no server: nothing to write for it.)
    expect(scripts).toHaveLength(2 + drServices.length - 1);
    expect(scripts.find((x) => x.includes('10.1.0.5 . tcp . 80'))).toContain('add element netdev switchyard services4 { 10.1.0.5 . tcp . 80 : goto grp.fwd-flow.4.tcp4 }');
  });

  it('--nft-dr-ingress without --nft-dr-device is refused at start', async () => {
    await expect(startAgent({ nftDrIngress: ['eth0'], etcd: ['http://127.0.0.1:1'], logLevel: 'silent' })).rejects.toThrow('--nft-dr-ingress needs --nft-dr-device');
  });

  it('without the flag nothing is planned in the netdev table', () => {
    const ops = planTables({ desired, observed: emptyObserved(), observedDr: emptyObserved() });
    expect(ops.some((o) => o.family === 'netdev')).toBe(false);
  });

  it('warns only where direct routing cannot be done', () => {
    const reports = drServices.flatMap((s) => serviceObjects(s, { drDevice: DEV }).reports).map((r) => `${r.serviceId}: ${r.message}`);
    expect(reports).toEqual([
      'tcp-10_1_0_3-80: scheduler wlc needs connection counts and the feedback is off; using the weights',
      'tcp-10_1_0_3-80: server 10_2_0_8-80: connection thresholds need connection counts and the feedback is off; not enforced',
      'tcp-2001_db8__1-80: server 2001_db8_1__6-8080: direct routing keeps the service port 80; the server port 8080 is not used',
      'tcp-2001_db8__2-80: scheduler wlc is not expressible at ingress (no connection tracking there); direct routing uses a weighted hash of the flow',
      'tcp-2001_db8__2-80: server 2001_db8_1__7-8080: direct routing keeps the service port 80; the server port 8080 is not used',
    ]);
    const tunnel = toService(ServiceInput.parse({ host: '10.1.0.9', port: 80, scheduler: 'rr', servers: [{ host: '10.2.0.17', port: 80, forwarder: 'i' }] }));
    expect(serviceObjects(tunnel, { drDevice: DEV }).reports.map((r) => r.message)).toEqual(['server 10_2_0_17-80: forwarder i is applied as DNAT without masquerade (nftables cannot encapsulate IPIP)']);
  });

  it('the device name is checked when the configuration is read, before any command', () => {
    expect(AgentConfig.safeParse({ nftDrDevice: 'eth1' }).success).toBe(true);
    expect(AgentConfig.safeParse({ nftDrDevice: 'a-very-long-name0' }).success).toBe(false);
    expect(AgentConfig.safeParse({ nftDrDevice: 'eth1; rm' }).success).toBe(false);
  });

  it('the dataplane reads and applies both tables and flushes both; without the flag it deletes an earlier netdev table once', async () => {
    const r = new FakeRunner().on('nft', ['-j', 'list', 'table', 'inet'], { stdout: read('observed-after-full.json') }).on('nft', ['-j', 'list', 'table', 'netdev'], { exitCode: 1, stderr: 'Error: No such file or directory' });
    const dp = new NftDataplane(new NftExecutor(r, { table: 'switchyard' }), 'switchyard', silent, { drDevice: DEV });
    const byIdDr = new Map(drServices.map((s) => [s.id, s]));
    await dp.sync(byIdDr);
    expect(r.lines().slice(0, 2).sort()).toEqual(['nft -j list table inet switchyard', 'nft -j list table netdev switchyard']);
    const script = r.calls.find((c) => c.args[0] === '-f')?.input ?? '';
    expect(script).toContain('add chain netdev switchyard ingress.eth1 { type filter hook ingress device "eth1" priority 0 ; policy accept ; }');
    // A full load groups element additions by map: one statement for many services.
    expect(script).toMatch(/^add element netdev switchyard services4 \{[^}\n]*10\.1\.0\.1 \. udp \. 53 : goto grp\.fwd-flow\.3\.udp4[,} ]/m);
    expect(script).not.toContain('delete element inet switchyard services4 { 10.1.0.1 . udp . 53 }');
    // An incremental pass plans from the model: a change to a direct-routed service is a few lines in each table.
    r.clear();
    const s = byIdDr.get('tcp-10_1_0_5-80') as Service;
    await dp.sync(new Map([...byIdDr, [s.id, { ...s, servers: s.servers.slice(1) }]]), new Set([s.id]));
    expect(r.calls.map((c) => c.input)).toEqual([
      [
        'delete element inet switchyard services4 { 10.1.0.5 . tcp . 80 }',
        'delete element inet switchyard backends4_tcp { 10.1.0.5 . 80 . 1, 10.1.0.5 . 80 . 2, 10.1.0.5 . 80 . 3 }',
        'add chain inet switchyard grp.numgen-inc.1.tcp4',
        'add rule inet switchyard grp.numgen-inc.1.tcp4 dnat ip to ip daddr . tcp dport . numgen inc mod 1 map @backends4_tcp',
        'add element inet switchyard services4 { 10.1.0.5 . tcp . 80 : goto grp.numgen-inc.1.tcp4 }',
        'delete element netdev switchyard services4 { 10.1.0.5 . tcp . 80 }',
        'delete element netdev switchyard fwd4_tcp { 10.1.0.5 . 80 . 1, 10.1.0.5 . 80 . 2, 10.1.0.5 . 80 . 3 }',
        'add chain netdev switchyard grp.fwd-flow.1.tcp4',
        'add rule netdev switchyard grp.fwd-flow.1.tcp4 fwd ip to ip daddr . tcp dport . jhash ip saddr . tcp sport mod 1 seed 0x5359 map @fwd4_tcp device "eth1"',
        'add element netdev switchyard services4 { 10.1.0.5 . tcp . 80 : goto grp.fwd-flow.1.tcp4 }',
        '',
      ].join('\n'),
    ]);
    r.clear();
    await dp.flush();
    expect(r.lines()).toEqual(['nft delete table inet switchyard', 'nft delete table netdev switchyard']);

    const off = new FakeRunner().on('nft', ['-j', 'list'], { stdout: read('observed-after-full.json') });
    const plain = new NftDataplane(new NftExecutor(off, { table: 'switchyard' }), 'switchyard', silent);
    await plain.sync(byId);
    await plain.sync(byId);
    expect(off.lines().filter((l) => l.includes('netdev'))).toEqual(['nft delete table netdev switchyard']);
  });
});

describe('slots', () => {
  it('reduces weights by their gcd and interleaves them (smooth weighted round robin)', () => {
    expect(slotCounts([30, 10, 0])).toEqual({ counts: [3, 1, 0], exact: true });
    expect(slotSequence([3, 1])).toEqual([0, 0, 1, 0]);
  });

  it('approximates totals above 256 slots, keeping every positive weight', () => {
    const { counts, exact } = slotCounts([1000, 1, 999]);
    expect(exact).toBe(false);
    expect(counts.reduce((a, b) => a + b, 0)).toBe(256);
    expect(counts[1]).toBe(1);
  });
});

describe('nftables executor', () => {
  it('applies the whole plan with one nft -f - in the namespace', async () => {
    const runner = new FakeRunner();
    const exec = new NftExecutor(runner, { table: 'switchyard', netns: 'syl4x' });
    const ops = planNft({ desired, observed: emptyObserved() });
    await exec.apply(ops);
    expect(runner.calls).toEqual([{ cmd: 'nft', args: ['-f', '-'], input: read('full-from-empty.nft'), netns: 'syl4x' }]);
  });

  it('treats a missing table as empty and lists only its own table', async () => {
    const runner = new FakeRunner().on('nft', ['-j', 'list'], { exitCode: 1, stderr: 'Error: No such file or directory; did you mean table ‘filter’ in family inet?' });
    const observed = await new NftExecutor(runner, { table: 'switchyard' }).observe();
    expect(observed).toEqual(emptyObserved());
    expect(runner.lines()).toEqual(['nft -j list table inet switchyard']);
  });

  it('deletes only its own table on flush, and a table already gone is fine', async () => {
    const runner = new FakeRunner().on('nft', ['delete'], { exitCode: 1, stderr: 'Error: No such file or directory' });
    await new NftExecutor(runner, { table: 'switchyard' }).deleteTable();
    expect(runner.lines()).toEqual(['nft delete table inet switchyard']);
  });

  it('puts nft\'s stderr into the error', async () => {
    const runner = new FakeRunner().on('nft', ['-f'], { exitCode: 1, stderr: 'Error: Could not process rule: No such file or directory' });
    await expect(new NftExecutor(runner, { table: 'switchyard' }).apply([{ kind: 'add-table' }])).rejects.toThrow(/nft -f - failed \(exit 1\): Error: Could not process rule/);
  });
});

const silent = pino({ level: 'silent' });

async function until(what: string, fn: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fn()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/**
 * A kernel whose table listing (`nft -j list table`) can be held back, like
 * a 10,000-service read-back that takes seconds; scripts (`nft -f -`) are
 * recorded and succeed at once.
 */
class SlowListing implements Runner {
  readonly scripts: string[] = [];
  listing = read('observed-after-full.json');
  private gate?: Promise<void>;
  private open?: () => void;

  hold(): void {
    this.gate = new Promise((r) => (this.open = r));
  }

  release(listing?: string): void {
    if (listing !== undefined) this.listing = listing;
    this.open?.();
    this.gate = undefined;
  }

  async run(_cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
    if (args[0] === '-j') {
      await this.gate;
      return { stdout: this.listing, stderr: '', exitCode: 0 };
    }
    if (args[0] === '-f') this.scripts.push(opts.input ?? '');
    return { stdout: '', stderr: '', exitCode: 0 };
  }
}

/** The fixture's listing with the element of 10.1.0.3:80 in services4 gone (drift). */
function listingWithout103(): string {
  const doc = JSON.parse(read('observed-after-full.json')) as { nftables: { map?: { name: string; elem?: unknown[] } }[] };
  for (const item of doc.nftables) {
    if (item.map?.name === 'services4') item.map.elem = item.map.elem?.filter((e) => !JSON.stringify(e).includes('"10.1.0.3"'));
  }
  return JSON.stringify(doc);
}

const byId = new Map(services.map((s) => [s.id, s]));
const CHANGED = 'tcp-10_1_0_1-80';
const oneServer = (): Map<string, Service> => {
  const next = new Map(byId);
  const s = byId.get(CHANGED) as Service;
  next.set(CHANGED, { ...s, servers: s.servers.slice(0, 1) });
  return next;
};

describe('nftables dataplane with a slow table read-back', () => {
  it('applies a change while the table is read, then plans the full pass around it and still undoes drift', async () => {
    const kernel = new SlowListing();
    const dp = new NftDataplane(new NftExecutor(kernel, { table: 'switchyard' }), 'switchyard', silent);
    await dp.prepareFull(byId);
    expect(await dp.sync(byId)).toMatchObject({ failed: false });
    expect(kernel.scripts).toEqual([]);

    // The periodic resync starts reading (and planning a snapshot of the desired
    // state); a change arrives and applies at once.
    kernel.hold();
    const reading = dp.prepareFull(byId);
    const next = oneServer();
    await dp.sync(next, new Set([CHANGED]));
    expect(kernel.scripts).toHaveLength(1);
    expect(kernel.scripts[0]).toContain('delete element inet switchyard services4 { 10.1.0.1 . tcp . 80 }');

    // The read was taken before the change, and someone deleted an element meanwhile.
    kernel.release(listingWithout103());
    await reading;
    await dp.sync(next);
    // The changed service is left as the incremental pass wrote it (re-planning it against the
    // older read and the older snapshot would undo the change); the drift is undone.
    expect(kernel.scripts[1]).toBe('add element inet switchyard services4 { 10.1.0.3 . tcp . 80 : goto grp.numgen-random.1.tcp4.masq }\n');
    expect(kernel.scripts).toHaveLength(2);
    // The group chain the change left unused goes with the next full pass (it plans the state of then).
    await dp.prepareFull(next);
    await dp.sync(next);
    expect(kernel.scripts[2]).toContain('flush chain inet switchyard grp.numgen-inc.2.tcp4.masq\ndelete chain inet switchyard grp.numgen-inc.2.tcp4.masq\n');
  });

  it('a change that arrives while the full pass is planned, and reaches the dataplane with that pass, is applied by it', async () => {
    const kernel = new SlowListing();
    const dp = new NftDataplane(new NftExecutor(kernel, { table: 'switchyard' }), 'switchyard', silent);
    await dp.sync(byId);
    kernel.hold();
    const reading = dp.prepareFull(byId);
    kernel.release();
    await reading;
    // The loop's next pass is the full one, and it carries the change (no incremental pass ran).
    const next = oneServer();
    await dp.sync(next);
    expect(kernel.scripts).toEqual([read('incremental-one-server.nft')]);
    // And the model has it: nothing left to do for that service.
    await dp.sync(next, new Set([CHANGED]));
    expect(kernel.scripts).toHaveLength(1);
  });

  it('a service an incremental pass wrote during the plan, and changed again since, is applied by the full pass', async () => {
    const kernel = new SlowListing();
    const dp = new NftDataplane(new NftExecutor(kernel, { table: 'switchyard' }), 'switchyard', silent);
    await dp.sync(byId);
    kernel.hold();
    const reading = dp.prepareFull(byId);
    await dp.sync(oneServer(), new Set([CHANGED]));
    kernel.release();
    await reading;
    // Back to two servers; the trigger of that change is consumed by the full pass.
    await dp.sync(byId);
    expect(kernel.scripts).toHaveLength(2);
    expect(kernel.scripts[1]).toContain('add element inet switchyard services4 { 10.1.0.1 . tcp . 80 : goto grp.numgen-inc.2.tcp4.masq }');
  });

  it('an incremental pass plans only the changed service, from the model, without listing the table', async () => {
    const kernel = new SlowListing();
    const dp = new NftDataplane(new NftExecutor(kernel, { table: 'switchyard' }), 'switchyard', silent);
    await dp.sync(byId);
    kernel.hold();
    // A listing would now hang: the incremental pass must not need one.
    await dp.sync(oneServer(), new Set([CHANGED]));
    expect(kernel.scripts).toEqual([read('incremental-one-server.nft')]);
    kernel.release();
  });

  it('once a read-back has overlapped changes for too long, changes wait for it instead of restarting it', async () => {
    const kernel = new SlowListing();
    const dp = new NftDataplane(new NftExecutor(kernel, { table: 'switchyard' }), 'switchyard', silent, { minReadOverlapMs: 20 });
    await dp.prepareFull(byId);
    await dp.sync(byId);
    kernel.hold();
    const reading = dp.prepareFull(byId);
    await new Promise((r) => setTimeout(r, 40));
    let done = false;
    const change = dp.sync(oneServer(), new Set([CHANGED])).then(() => (done = true));
    await new Promise((r) => setTimeout(r, 40));
    expect(done).toBe(false);
    expect(kernel.scripts).toEqual([]);
    kernel.release();
    await Promise.all([reading, change]);
    expect(kernel.scripts).toHaveLength(1);
  });
});

describe('sync loop with a slow first half of the full pass', () => {
  it('waits for the first full pass, then keeps applying changes while a later read-back runs', async () => {
    const calls: string[] = [];
    let release: () => void = () => undefined;
    const loop = new SyncLoop({
      sync: async (full) => {
        calls.push(full ? 'full' : 'changes');
      },
      prepareFull: () => {
        calls.push('read');
        return new Promise<void>((r) => (release = r));
      },
      minIntervalMs: 0,
      resyncMs: 60_000,
      log: silent,
    });
    loop.start();
    await until('the first read', () => calls.length === 1);
    // No model yet: a change waits for the first full pass, which includes it.
    loop.trigger();
    await new Promise((r) => setTimeout(r, 20));
    expect(calls).toEqual(['read']);
    release();
    await until('the first full pass', () => calls.length === 2);
    expect(calls).toEqual(['read', 'full']);

    // The periodic resync starts reading; changes keep being applied meanwhile.
    calls.length = 0;
    loop.requestFull();
    await until('a read and a pass', () => calls.length === 2);
    loop.trigger();
    await until('another pass', () => calls.length === 3);
    expect(calls).toEqual(['read', 'changes', 'changes']);
    release();
    await until('the full pass', () => calls.length === 4);
    expect(calls.at(-1)).toBe('full');
    await loop.stop();
  });
});

describe('--nft-local-vips', () => {
  it('plans adds for VIPs the device lacks and deletes for the ones nobody wants', () => {
    expect(planAddresses(['10.1.0.2', '10.1.0.1', '2001:db8::1'], ['10.1.0.1', '10.9.9.9'])).toEqual([
      { kind: 'add-address', address: '10.1.0.2' },
      { kind: 'add-address', address: '2001:db8::1' },
      { kind: 'delete-address', address: '10.9.9.9' },
    ]);
    expect(planAddresses(['10.1.0.1'], ['10.1.0.1'])).toEqual([]);
    expect(planAddresses([], ['10.1.0.1'])).toEqual([{ kind: 'delete-address', address: '10.1.0.1' }]);
  });

  /** A kernel with the fixture table and a device whose addresses are kept in memory. */
  function kernel(onDevice: string[], opts: { noDummy?: boolean } = {}): FakeRunner {
    const addrs = new Set(onDevice);
    let exists = onDevice.length > 0;
    const addrJson = () => JSON.stringify(exists ? [{ ifname: 'sy-nft0', addr_info: [...addrs].map((a) => ({ family: a.includes(':') ? 'inet6' : 'inet', local: a, prefixlen: a.includes(':') ? 128 : 32 })) }] : []);
    return new FakeRunner()
      .on('nft', ['-j', 'list'], { stdout: read('observed-after-full.json') })
      .on('ip', ['-j', 'addr', 'show'], () => (exists ? { stdout: addrJson() } : { exitCode: 1, stderr: 'Device "sy-nft0" does not exist.' }))
      .on('ip', ['-j', '-d', 'link', 'show'], () => (exists ? { stdout: JSON.stringify([{ ifname: 'sy-nft0', flags: ['UP'], linkinfo: { info_kind: 'dummy' } }]) } : { exitCode: 1 }))
      .on('ip', ['-batch', '-'], (call) => {
        for (const line of (call.input ?? '').split('\n').filter(Boolean)) {
          if (line.includes('type dummy')) {
            if (opts.noDummy) return { exitCode: 2, stderr: 'Error: Unknown device type.' };
            exists = true;
          }
          const m = /^address (replace|del) ([^/]+)\//.exec(line);
          if (m && m[1] === 'replace') addrs.add(m[2]);
          if (m && m[1] === 'del') addrs.delete(m[2]);
        }
        return {};
      });
  }
  const ipCalls = (r: FakeRunner) => r.calls.filter((c) => c.cmd === 'ip').map((c) => [`ip ${c.args.join(' ')}`, c.input].filter(Boolean).join('\n'));
  const dataplane = (r: FakeRunner, enabled: boolean) =>
    new NftDataplane(new NftExecutor(r, { table: 'switchyard' }), 'switchyard', silent, { localVips: { device: new DeviceAddresses(r, 'sy-nft0'), enabled } });

  it('a full pass creates the device and adds every VIP; an incremental pass needs no read and removes a deleted VIP', async () => {
    const r = kernel([]);
    const dp = dataplane(r, true);
    expect(await dp.sync(byId)).toMatchObject({ failed: false });
    expect(ipCalls(r)).toEqual([
      'ip -j addr show dev sy-nft0',
      'ip -j -d link show dev sy-nft0',
      'ip -batch -\nlink add sy-nft0 type dummy\nlink set sy-nft0 up\n',
      'ip -batch -\naddress replace 10.1.0.1/32 dev sy-nft0\naddress replace 10.1.0.2/32 dev sy-nft0\naddress replace 10.1.0.3/32 dev sy-nft0\naddress replace 10.1.0.4/32 dev sy-nft0\naddress replace 2001:db8::1/128 dev sy-nft0\n',
    ]);

    // 10.1.0.1 still has a service (udp 53): only 10.1.0.2 goes with its service.
    r.clear();
    const next = new Map(byId);
    next.delete('tcp-10_1_0_1-80');
    await dp.sync(next, new Set(['tcp-10_1_0_1-80']));
    expect(ipCalls(r)).toEqual([]);
    next.delete('tcp-10_1_0_2-443');
    await dp.sync(next, new Set(['tcp-10_1_0_2-443']));
    expect(ipCalls(r)).toEqual(['ip -j addr show dev sy-nft0', 'ip -batch -\naddress del 10.1.0.2/32 dev sy-nft0\n']);

    // flush removes the device with the table.
    r.clear();
    await dp.flush();
    expect(r.lines()).toEqual(['nft delete table inet switchyard', 'ip link del dev sy-nft0']);
  });

  it('off: nothing is added, and a full pass empties the device an earlier run left', async () => {
    const r = kernel(['10.1.0.1', '10.7.7.7']);
    const dp = dataplane(r, false);
    await dp.sync(byId);
    expect(ipCalls(r)).toEqual(['ip -j addr show dev sy-nft0', 'ip -j addr show dev sy-nft0', 'ip -batch -\naddress del 10.1.0.1/32 dev sy-nft0\naddress del 10.7.7.7/32 dev sy-nft0\n']);
    r.clear();
    await dp.sync(oneServer(), new Set([CHANGED]));
    expect(ipCalls(r)).toEqual([]);
    // Once emptied, later full passes leave the device alone.
    await dp.sync(oneServer());
    expect(ipCalls(r)).toEqual([]);
  });

  it('a kernel without dummy devices: the services carry the error and the next pass is full', async () => {
    const r = kernel([], { noDummy: true });
    const out = await dataplane(r, true).sync(byId);
    expect(out.failed).toBe(true);
    expect(out.reports.get('tcp-10_1_0_1-80')).toContainEqual({
      serviceId: 'tcp-10_1_0_1-80',
      level: 'error',
      message: expect.stringMatching(/^VIP not made local on sy-nft0 \(--nft-local-vips\): .*Unknown device type/),
    });
  });
});
