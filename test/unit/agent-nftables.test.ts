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
import { DeviceAddresses, planAddresses } from '../../packages/agent/src/dataplanes/local-addresses.js';
import { NftDataplane } from '../../packages/agent/src/l4/nft.js';
import { SyncLoop } from '../../packages/agent/src/loop.js';
import {
  emptyObserved,
  NFT_BASE,
  NftExecutor,
  observedOf,
  parseNftJson,
  planNft,
  renderNftScript,
  serviceObjects,
  slotCounts,
  slotSequence,
  type NftObserved,
  type ServiceObjects,
} from '../../packages/agent/src/dataplanes/nftables/index.js';

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
      'udp-10_1_0_1-53: server 10_2_0_3-53: forwarder g is applied as DNAT without masquerade (nftables cannot route directly or tunnel)',
      'udp-10_1_0_1-53: server 10_2_0_4-53: forwarder g is applied as DNAT without masquerade (nftables cannot route directly or tunnel)',
      'udp-10_1_0_1-53: server 10_2_0_5-53: forwarder g is applied as DNAT without masquerade (nftables cannot route directly or tunnel)',
      'tcp-10_1_0_3-80: scheduler wlc is not expressible in nftables; using weighted random distribution',
      'tcp-10_1_0_3-80: server 10_2_0_8-80: connection thresholds are not enforced by nftables',
      'tcp-2001_db8__1-80: server 2001_db8_1__6-8080: forwarder g is applied as DNAT without masquerade (nftables cannot route directly or tunnel)',
    ]);
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
