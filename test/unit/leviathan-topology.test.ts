/**
 * The topology planner and executor as pure functions: desired state from
 * Leviathan records, plan against what was observed, golden batch text, and
 * convergence (after applying a plan, the next plan is empty).
 */
import { describe, expect, it } from 'vitest';
import { levNames, type StoredCen, type StoredCin, type StoredContainer } from '../../packages/shared/src/index.js';
import { applyOps, commandsFor, DELETE_GROUP, desiredFor, emptyObserved, execute, findUnderlay, isolationRules, natRules, observeTopology, parseIsolation, parseJoins, parseNat, plan, type Command } from '../../packages/agent/src/leviathan/index.js';
import { FakeRunner } from '../../packages/agent/src/exec/runner.js';
import { helperCommand, NS_HELPER_PROGRAM } from '../../packages/agent/src/adapters/netns-helper.js';
import { PYTHON3 } from '../../packages/agent/src/exec/python.js';

const cen = (id: string, contIDs: string[], extra: Partial<StoredCen> = {}): StoredCen => ({ cenID: id, contIDs, wiring: 'bridge', made: true, vni: 1000, ...extra });
const ctr = (id: string, host = 'h1', extra: Partial<StoredContainer> = {}): StoredContainer => ({ containerID: id, host, tag: null, defaultRoute: null, cpoolID: null, ...extra });
const cin: StoredCin = {
  cinID: 'cin1',
  cenIDs: ['cen1'],
  made: true,
  subnet: { index: 10, cidr: '10.10.0.0/16', gateway: '10.10.0.1' },
  addresses: [
    { containerID: 'a', cenID: 'cen1', ip: '10.10.0.10' },
    { containerID: 'b', cenID: 'cen1', ip: '10.10.0.11' },
  ],
};
const input = {
  hostId: 'h1',
  underlay: '192.0.2.1',
  underlays: new Map([['h2', '192.0.2.2']]),
  cens: [cen('cen1', ['a', 'b', 'r'])],
  cins: [cin],
  containers: [ctr('a', 'h1', { defaultRoute: 'cen1' }), ctr('b'), ctr('r', 'h2')],
};
const ctx = { created: new Set<string>(), knownCens: new Set(['cen1']) };

describe('topology plan', () => {
  it('names: prefix + id when short, a hash when long, never colliding', () => {
    expect(levNames.bridge('cen1')).toBe('syb-cen1');
    expect(levNames.bridge('a-very-long-cen')).toMatch(/^syb_[0-9a-f]{11}$/);
    expect(levNames.vethHost('a', 'cen1')).toMatch(/^syv[0-9a-f]{12}$/);
    expect(levNames.vethHost('a', 'cen1')).not.toBe(levNames.vethHost('b', 'cen1'));
  });

  it('plans a bridge, veths, VXLAN to the remote host, addresses and a default route — as golden batch text', () => {
    const d = desiredFor(input);
    const ops = plan(d, emptyObserved(), ctx);
    const cmds = commandsFor(ops, 'batched', 'hostns');
    const va = levNames.vethHost('a', 'cen1');
    const vb = levNames.vethHost('b', 'cen1');
    expect(cmds.map((c) => `${c.cmd} ${c.args.join(' ')}\n${c.input ?? ''}`)).toEqual([
      'ip -batch -\nnetns add a\nnetns add b\n',
      `ip -n hostns -batch -\nlink add name syb-cen1 up type bridge\naddr replace 10.10.0.1/16 dev syb-cen1\nlink add name syx-cen1 up master syb-cen1 type vxlan id 1000 local 192.0.2.1 dstport 4789\nlink add name ${va} up master syb-cen1 type veth peer name cen1 netns a\nlink add name ${vb} up master syb-cen1 type veth peer name cen1 netns b\n`,
      'bridge -n hostns -batch -\nfdb append 00:00:00:00:00:00 dev syx-cen1 dst 192.0.2.2\n',
      'ip -n a -batch -\nlink set dev cen1 up\naddr replace 10.10.0.10/16 dev cen1\nroute replace default via 10.10.0.1 dev cen1\n',
      'ip -n b -batch -\nlink set dev cen1 up\naddr replace 10.10.0.11/16 dev cen1\n',
      expect.stringMatching(/^nft -f -\ntable inet switchyard_lev\n.*iifname "syb-cen1" oifname "syb-\*" oifname != "syb-cen1" drop\n.*iifname "syb-cen1" oifname "syb_\*" oifname != "syb-cen1" drop/s),
    ]);
    // Per-object mode: the same ops, one command each.
    expect(commandsFor(ops, 'per-object', 'hostns')).toHaveLength(ops.length);
  });

  it('converges: after the ops ran, the next plan is empty; removing everything undoes exactly them', () => {
    const d = desiredFor(input);
    const after = applyOps(emptyObserved(), plan(d, emptyObserved(), ctx));
    expect(plan(d, after, ctx)).toEqual([]);
    const created = new Set(['a', 'b']);
    const none = desiredFor({ ...input, cens: [], cins: [], containers: [] });
    const teardown = plan(none, after, { ...ctx, created });
    expect(teardown.map((o) => o.op).sort()).toEqual(['isolation', 'link-del', 'link-del', 'link-del', 'link-del', 'nat', 'netns-del', 'netns-del']);
    expect(plan(none, applyOps(after, teardown), { ...ctx, created: new Set() })).toEqual([]);
  });

  it('never deletes an adopted namespace nor a foreign link', () => {
    const o = emptyObserved();
    o.namespaces.add('adopted');
    o.nsLinks.set('adopted', new Map([['eth0', { kind: 'veth', up: true, addrs: ['172.17.0.2/16'] }]]));
    o.hostLinks.set('syb-gone', { kind: 'bridge', up: true, addrs: [] });
    const ops = plan(desiredFor({ ...input, cens: [], cins: [], containers: [] }), o, ctx);
    expect(ops).toEqual([{ op: 'link-del', name: 'syb-gone' }]);
  });

  it('a wire with both ends here is one veth pair between the namespaces', () => {
    const d = desiredFor({ ...input, cens: [cen('w', ['a', 'b'], { wiring: 'wire' })], cins: [] });
    const ops = plan(d, emptyObserved(), ctx);
    expect(ops.filter((o) => o.op === 'wire-add')).toEqual([{ op: 'wire-add', name: 'w', a: 'a', b: 'b' }]);
    expect(d.bridges.size).toBe(0);
  });

  it('the executor tolerates "already gone" on removals and fails on anything else', async () => {
    const runner = new FakeRunner().on('ip', ['-n', 'hostns', '-force'], { exitCode: 1, stderr: 'Cannot find device "syb-x"\nCommand failed -:1\n' });
    await execute(runner, commandsFor([{ op: 'link-del', name: 'syb-x' }], 'batched', 'hostns'));
    const bad = new FakeRunner().on('ip', ['-n', 'hostns'], { exitCode: 2, stderr: 'RTNETLINK answers: File exists\n' });
    await expect(execute(bad, commandsFor([{ op: 'bridge-add', name: 'syb-x' }], 'batched', 'hostns'))).rejects.toThrow(/File exists/);
  });
});

describe('MTU on VXLAN-backed CENs', () => {
  const withMtu = { ...input, underlayMtu: 9000 };

  it('the VXLAN device and both ends of every veth of the CEN get the underlay MTU less 50 — as golden batch text', () => {
    const d = desiredFor(withMtu);
    expect(d.vxlans.get('syx-cen1')?.mtu).toBe(8950);
    const cmds = commandsFor(plan(d, emptyObserved(), ctx), 'batched', 'hostns');
    const host = cmds.find((c) => c.args.join(' ') === '-n hostns -batch -')?.input ?? '';
    expect(host).toContain('link add name syx-cen1 mtu 8950 up master syb-cen1 type vxlan id 1000 local 192.0.2.1 dstport 4789\n');
    expect(host).toContain(`link add name ${levNames.vethHost('a', 'cen1')} mtu 8950 up master syb-cen1 type veth peer name cen1 mtu 8950 netns a\n`);
    // An IPv6 underlay costs 20 bytes more.
    expect(desiredFor({ ...withMtu, underlay: '2001:db8::1', underlays: new Map([['h2', '2001:db8::2']]) }).vxlans.get('syx-cen1')?.mtu).toBe(8930);
  });

  it('a CEN with no remote member keeps the default MTU; links in place are changed when it starts spanning hosts', () => {
    const single = { ...withMtu, cens: [cen('cen1', ['a', 'b'])], containers: [ctr('a'), ctr('b')] };
    const d1 = desiredFor(single);
    expect(d1.vxlans.size).toBe(0);
    expect(plan(d1, emptyObserved(), ctx).some((o) => 'mtu' in o)).toBe(false);
    // The kernel's 1500 everywhere, then a remote member joins.
    const after = applyOps(emptyObserved(), plan(d1, emptyObserved(), ctx));
    for (const l of after.hostLinks.values()) l.mtu = 1500;
    for (const m of after.nsLinks.values()) for (const l of m.values()) l.mtu = 1500;
    const d2 = desiredFor(withMtu);
    const ops = plan(d2, after, ctx);
    expect(ops.filter((o) => o.op === 'link-mtu')).toEqual([
      { op: 'link-mtu', name: levNames.vethHost('a', 'cen1'), mtu: 8950 },
      { op: 'link-mtu', name: levNames.vethHost('b', 'cen1'), mtu: 8950 },
      { op: 'link-mtu', ns: 'a', name: 'cen1', mtu: 8950 },
      { op: 'link-mtu', ns: 'b', name: 'cen1', mtu: 8950 },
    ]);
    expect(commandsFor(ops, 'batched', 'hostns').find((c) => c.args.join(' ') === '-n a -batch -')?.input).toMatch(/^link set dev cen1 mtu 8950\n/);
    expect(plan(d2, applyOps(after, ops), ctx)).toEqual([]);
  });

  it('finds the underlay: by interface, by address, or the first global IPv4 address; a missing interface is an error', async () => {
    const link = (ifname: string, mtu: number, addrs: string[]) => ({ ifname, mtu, flags: ['UP'], addr_info: addrs.map((a) => ({ family: 'inet', local: a, prefixlen: 24, scope: 'global' })) });
    const runner = new FakeRunner().on('ip', ['-n', 'hostns', '-j', '-d', 'addr', 'show'], {
      stdout: JSON.stringify([link('lo', 65536, []), link('syb-cen1', 1450, ['10.10.0.1']), link('eth0', 1500, ['198.51.100.7']), link('eth1', 9000, ['192.0.2.1'])]),
    });
    expect(await findUnderlay(runner, 'hostns')).toEqual({ address: '198.51.100.7', iface: 'eth0', mtu: 1500 });
    expect(await findUnderlay(runner, 'hostns', { iface: 'eth1' })).toEqual({ address: '192.0.2.1', iface: 'eth1', mtu: 9000 });
    expect(await findUnderlay(runner, 'hostns', { address: '192.0.2.1' })).toEqual({ address: '192.0.2.1', iface: 'eth1', mtu: 9000 });
    expect(await findUnderlay(runner, 'hostns', { address: '203.0.113.9' })).toEqual({ address: '203.0.113.9' });
    await expect(findUnderlay(runner, 'hostns', { iface: 'eth9' })).rejects.toThrow(/underlay interface eth9 does not exist/);
    // Malformed names and addresses are refused before any command runs.
    const untouched = new FakeRunner();
    await expect(findUnderlay(untouched, 'hostns', { iface: 'eth0;reboot' })).rejects.toThrow(/not a valid interface name/);
    await expect(findUnderlay(untouched, 'hostns', { iface: 'a-name-of-16-chr' })).rejects.toThrow(/not a valid interface name/);
    await expect(findUnderlay(untouched, 'hostns', { address: '2001:db8::1' })).rejects.toThrow(/not an IPv4 address/);
    expect(untouched.calls).toEqual([]);
  });
});

describe('a CIN over several CENs', () => {
  const span = {
    ...input,
    underlays: new Map<string, string>(),
    cens: [cen('cen1', ['a', 'b']), cen('cen2', ['c'])],
    cins: [{ ...cin, cenIDs: ['cen1', 'cen2'], addresses: [...cin.addresses, { containerID: 'c', cenID: 'cen2', ip: '10.10.0.12' }] }],
    containers: [ctr('a'), ctr('b'), ctr('c')],
  };
  const spanCtx = { created: new Set<string>(), knownCens: new Set(['cen1', 'cen2']) };

  it('routes between its bridges: a /32 per address, proxy ARP, and a pass through the isolation table — as golden text', () => {
    const d = desiredFor(span);
    expect(d.joins).toEqual([{ subnet: '10.10.0.0/16', bridges: ['syb-cen1', 'syb-cen2'] }]);
    expect([...d.hostRoutes]).toEqual([
      ['10.10.0.10', 'syb-cen1'],
      ['10.10.0.11', 'syb-cen1'],
      ['10.10.0.12', 'syb-cen2'],
    ]);
    const cmds = commandsFor(plan(d, emptyObserved(), spanCtx), 'batched', 'hostns');
    const host = cmds.find((c) => c.args.join(' ') === '-n hostns -batch -')?.input ?? '';
    expect(host).toContain('route replace 10.10.0.10/32 dev syb-cen1\nroute replace 10.10.0.11/32 dev syb-cen1\nroute replace 10.10.0.12/32 dev syb-cen2\n');
    expect(cmds.filter((c) => c.cmd === 'sysctl')).toEqual([
      {
        cmd: 'sysctl',
        args: ['-q', '-w', 'net/ipv4/conf/syb-cen1/proxy_arp=1', 'net/ipv4/neigh/syb-cen1/proxy_delay=0', 'net/ipv4/conf/syb-cen2/proxy_arp=1', 'net/ipv4/neigh/syb-cen2/proxy_delay=0'],
        netns: 'hostns',
        tolerant: false,
      },
    ]);
    const nft = cmds.find((c) => c.cmd === 'nft')?.input ?? '';
    // The pass comes first: an accept ends the chain before the drops.
    expect(nft.split('\n')[5]).toBe('    iifname { "syb-cen1", "syb-cen2" } oifname { "syb-cen1", "syb-cen2" } ip saddr 10.10.0.0/16 ip daddr 10.10.0.0/16 accept');
    expect(parseJoins(nft.replace('{ "syb-cen1", "syb-cen2" } ip', '{ "syb-cen2", "syb-cen1" } ip'))).toEqual(d.joins);
  });

  it('converges, and undoes the routes, proxy ARP and pass when the CIN is destroyed (the bridges stay)', () => {
    const d = desiredFor(span);
    const after = applyOps(emptyObserved(), plan(d, emptyObserved(), spanCtx));
    expect(plan(d, after, spanCtx)).toEqual([]);
    const gone = desiredFor({ ...span, cins: [{ ...span.cins[0], made: false, subnet: null, addresses: [] }] });
    const ops = plan(gone, after, spanCtx);
    expect(ops.filter((o) => o.op === 'route-host-del')).toHaveLength(3);
    expect(ops.filter((o) => o.op === 'proxy-arp')).toEqual([
      { op: 'proxy-arp', dev: 'syb-cen1', on: false },
      { op: 'proxy-arp', dev: 'syb-cen2', on: false },
    ]);
    expect(ops).toContainEqual({ op: 'isolation', bridges: ['syb-cen1', 'syb-cen2'] });
    expect(plan(gone, applyOps(after, ops), spanCtx)).toEqual([]);
    // A CIN over one CEN, or over a CEN with no bridge here, joins nothing.
    expect(desiredFor({ ...span, containers: [ctr('a'), ctr('b'), ctr('c', 'h2')] }).joins).toEqual([]);
  });
});

describe('NAT for default routes', () => {
  it('masquerades the subnet of a CIN that is a default route here, in the same nft -f - as the isolation table', () => {
    const d = desiredFor(input);
    expect(d.nat).toEqual(['10.10.0.0/16']);
    const ops = plan(d, emptyObserved(), ctx);
    expect(ops.filter((o) => o.op === 'nat')).toEqual([{ op: 'nat', subnets: ['10.10.0.0/16'] }]);
    const nft = commandsFor(ops, 'batched', 'hostns').filter((c) => c.cmd === 'nft');
    expect(nft).toHaveLength(1);
    expect(nft[0].input).toContain(
      [
        'table ip switchyard_lev_nat',
        'flush table ip switchyard_lev_nat',
        'table ip switchyard_lev_nat {',
        '  chain postrouting {',
        '    type nat hook postrouting priority srcnat; policy accept;',
        '    ip saddr 10.10.0.0/16 oifname != "syb-*" oifname != "syb_*" masquerade',
        '  }',
        '}',
      ].join('\n'),
    );
  });

  it('no default route here, no NAT; the table is pruned once the last default route goes', () => {
    const noRoute = { ...input, containers: [ctr('a'), ctr('b'), ctr('r', 'h2')] };
    expect(desiredFor(noRoute).nat).toEqual([]);
    // A default route on another host does not NAT here.
    expect(desiredFor({ ...input, containers: [ctr('a'), ctr('b'), ctr('r', 'h2', { defaultRoute: 'cen1' })] }).nat).toEqual([]);
    const after = applyOps(emptyObserved(), plan(desiredFor(input), emptyObserved(), ctx));
    expect(after.nat).toEqual(['10.10.0.0/16']);
    const ops = plan(desiredFor(noRoute), after, ctx);
    expect(ops).toContainEqual({ op: 'nat', subnets: [] });
    expect(ops).toContainEqual({ op: 'route-default-del', ns: 'a' });
    const nft = commandsFor(ops, 'batched', 'hostns').find((c) => c.cmd === 'nft');
    expect(nft).toMatchObject({ tolerant: true, input: 'table ip switchyard_lev_nat\ndelete table ip switchyard_lev_nat\n' });
    expect(plan(desiredFor(noRoute), applyOps(after, ops), ctx)).toEqual([]);
  });

  it('reads back what it wrote, and refuses a subnet that is not one', () => {
    expect(parseNat(natRules(['10.11.0.0/16', '10.10.0.0/16']))).toEqual(['10.10.0.0/16', '10.11.0.0/16']);
    expect(parseNat('ip saddr 10.10.0.0/16 masquerade')).toEqual([]);
    expect(() => natRules(['10.10.0.0/16; flush ruleset'])).toThrow(/not an IPv4 subnet/);
  });
});

describe('ownership of host links', () => {
  it('owns exactly the generated names, not every link starting with syb/syv/syx', () => {
    for (const id of ['cen1', 'a-very-long-cen', 'x']) {
      expect(levNames.isOwnedLink(levNames.bridge(id))).toBe(true);
      expect(levNames.isOwnedLink(levNames.vxlan(id))).toBe(true);
      expect(levNames.isOwnedLink(levNames.vethHost('c1', id))).toBe(true);
    }
    for (const foreign of ['sybase0', 'syvpn', 'syxfer', 'syv', 'syb', 'syb-', 'syb_short', 'syv0123456789abc', 'syv0123456789AB', 'sy-ipvs0', 'eth0', 'syb--x']) {
      expect(levNames.isOwnedLink(foreign), foreign).toBe(false);
    }
  });

  it('observes and prunes only its own links in the root namespace (no --netns)', async () => {
    const link = (ifname: string, kind: string) => ({ ifname, flags: ['UP'], linkinfo: { info_kind: kind }, addr_info: [] });
    const runner = new FakeRunner()
      .on('ip', ['-j', '-d', 'addr', 'show'], { stdout: JSON.stringify([link('sybase0', 'bridge'), link('syvpn', 'tun'), link('syxfer', 'dummy'), link('syb-gone', 'bridge'), link(levNames.vethHost('a', 'gone'), 'veth')]) })
      .on('nft', ['list'], { exitCode: 1, stderr: 'No such file or directory' });
    const o = await observeTopology(runner, undefined, [], 'ip');
    expect([...o.hostLinks.keys()].sort()).toEqual(['syb-gone', levNames.vethHost('a', 'gone')].sort());
    // The same through the helper (its answer in the same terms), asked for the agent's own namespace.
    const helper = new FakeRunner()
      .on(PYTHON3, [], {
        stdout: JSON.stringify({
          namespaces: [],
          host: [link('sybase0', 'bridge'), link('syvpn', 'tun'), link('syb-gone', 'bridge'), link(levNames.vethHost('a', 'gone'), 'veth')].map((l) => ({ name: l.ifname, kind: l.linkinfo.info_kind, up: true, addrs: [] })),
          observed: {},
        }),
      })
      .on('nft', ['list'], { exitCode: 1, stderr: 'No such file or directory' });
    expect(await observeTopology(helper, undefined, [])).toEqual(o);
    expect(JSON.parse(helper.calls.find((c) => c.cmd === PYTHON3)?.input ?? '')).toEqual({ list: true, host: '', observe: [] });
    const ops = plan(desiredFor({ ...input, cens: [], cins: [], containers: [] }), o, ctx);
    expect(ops.map((x) => (x.op === 'link-del' ? x.name : x.op)).sort()).toEqual(['syb-gone', levNames.vethHost('a', 'gone')].sort());
  });

  it('isolation drops only towards CEN bridge names, and rewrites a table in the older "syb*" form', () => {
    const text = isolationRules(['syb-a', 'syb_0123456789a']);
    expect(text).not.toContain('"syb*"');
    expect(parseIsolation(text)).toEqual(['syb-a', 'syb_0123456789a']);
    expect(parseIsolation('iifname "syb-a" oifname "syb*" oifname != "syb-a" drop')).toEqual([]);
  });
});

describe('netlink mode: one netns-helper process for every container namespace', () => {
  /** A command as text, the helper's program elided. */
  const show = (c: Command) => `${c.cmd === PYTHON3 ? 'HELPER' : c.cmd} ${c.args.map((a) => (a === NS_HELPER_PROGRAM ? 'PROGRAM' : a)).join(' ')}\n${c.input ?? ''}`;

  it('makes: namespaces and host links in one ip batch each, every container inside in one helper request — as golden text', () => {
    const cmds = commandsFor(plan(desiredFor(input), emptyObserved(), ctx), 'netlink', 'hostns');
    const va = levNames.vethHost('a', 'cen1');
    const vb = levNames.vethHost('b', 'cen1');
    expect(cmds.map(show)).toEqual([
      'ip -batch -\nnetns add a\nnetns add b\n',
      `ip -n hostns -batch -\nlink add name syb-cen1 up type bridge\naddr replace 10.10.0.1/16 dev syb-cen1\nlink add name syx-cen1 up master syb-cen1 type vxlan id 1000 local 192.0.2.1 dstport 4789\nlink add name ${va} up master syb-cen1 type veth peer name cen1 netns a\nlink add name ${vb} up master syb-cen1 type veth peer name cen1 netns b\n`,
      'bridge -n hostns -batch -\nfdb append 00:00:00:00:00:00 dev syx-cen1 dst 192.0.2.2\n',
      'HELPER -I -S -c PROGRAM\n' +
        JSON.stringify({
          apply: [
            { ns: 'a', ops: [['up', 'cen1'], ['addr', 'cen1', '10.10.0.10/16'], ['route', '10.10.0.1', 'cen1']] },
            { ns: 'b', ops: [['up', 'cen1'], ['addr', 'cen1', '10.10.0.11/16']] },
          ],
        }),
      expect.stringMatching(/^nft -f -\ntable inet switchyard_lev\n/),
    ]);
    // Once the host links exist, flood lists, container insides and nft run together.
    expect(cmds.map((c) => c.concurrent ?? false)).toEqual([false, false, false, true, true]);
  });

  it('destroys: host veths whose namespace goes are left to the kernel, other host links go as one group, namespaces in one batch', () => {
    const d = desiredFor(input);
    const after = applyOps(emptyObserved(), plan(d, emptyObserved(), ctx));
    const none = desiredFor({ ...input, cens: [], cins: [], containers: [] });
    const ops = plan(none, after, { ...ctx, created: new Set(['a', 'b']) });
    expect(ops.filter((o) => o.op === 'link-del' && o.goesWith).map((o) => (o as { goesWith: string }).goesWith).sort()).toEqual(['a', 'b']);
    const cmds = commandsFor(ops, 'netlink', 'hostns').map(show);
    // The host's link deletion, the namespaces' and the tables' run together.
    expect(commandsFor(ops, 'netlink', 'hostns').map((c) => c.concurrent ?? false)).toEqual([false, true, true]);
    expect(commandsFor(ops, 'batched', 'hostns').some((c) => c.concurrent)).toBe(false);
    expect(cmds).toEqual([
      `ip -n hostns -force -batch -\nlink set dev syb-cen1 group ${DELETE_GROUP}\nlink set dev syx-cen1 group ${DELETE_GROUP}\nlink del group ${DELETE_GROUP}\n`,
      'ip -force -batch -\nnetns del a\nnetns del b\n',
      expect.stringMatching(/^nft -f -\ntable inet switchyard_lev\ndelete table inet switchyard_lev\n/),
    ]);
    // The old batched mode deletes every host link itself, one line each.
    expect(commandsFor(ops, 'batched', 'hostns').map(show)[0]).toMatch(new RegExp(`^ip -n hostns -force -batch -\\n(link del dev \\S+\\n){4}$`));
  });

  it('a container leaving a CEN while its namespace stays: its host end is deleted (group), its insides through the helper, tolerant', () => {
    const d = desiredFor(input);
    const after = applyOps(emptyObserved(), plan(d, emptyObserved(), ctx));
    // b leaves the CIN and the CEN; its namespace stays (the container is still placed here).
    const left = desiredFor({ ...input, cens: [cen('cen1', ['a', 'r'])], cins: [{ ...cin, addresses: cin.addresses.slice(0, 1) }] });
    const ops = plan(left, after, ctx);
    const cmds = commandsFor(ops, 'netlink', 'hostns').map(show);
    expect(cmds).toContain(`ip -n hostns -force -batch -\nlink set dev ${levNames.vethHost('b', 'cen1')} group ${DELETE_GROUP}\nlink del group ${DELETE_GROUP}\n`);
    expect(plan(left, applyOps(after, ops), ctx)).toEqual([]);
    // Inside-container removals go to the helper as one tolerant request.
    const removal = commandsFor([{ op: 'addr-del', ns: 'a', dev: 'cen1', cidr: '10.10.0.10/16' }, { op: 'route-default-del', ns: 'a' }], 'netlink', 'hostns');
    expect(removal).toEqual([{ ...helperCommand({ apply: [{ ns: 'a', ops: [['addr-del', 'cen1', '10.10.0.10/16'], ['route-del']] }], tolerant: true }), tolerant: true }]);
  });

  it('a host link observed in the delete group (a group deletion cut short) is deleted and made again, never kept', () => {
    const d = desiredFor(input);
    const after = applyOps(emptyObserved(), plan(d, emptyObserved(), ctx));
    const bridge = after.hostLinks.get('syb-cen1');
    if (bridge) bridge.doomed = true;
    const ops = plan(d, after, ctx);
    expect(ops).toContainEqual({ op: 'link-del', name: 'syb-cen1' });
    expect(ops).toContainEqual({ op: 'bridge-add', name: 'syb-cen1' });
    expect(plan(d, applyOps(after, ops), ctx)).toEqual([]);
  });

  it('checks every name, address and MTU before they reach the helper', () => {
    expect(() => helperCommand({ observe: ['a b'] })).toThrow(/not a valid namespace name/);
    expect(() => helperCommand({ apply: [{ ns: 'a', ops: [['up', 'a-name-of-16-chr']] }] })).toThrow(/not a valid interface name/);
    expect(() => helperCommand({ apply: [{ ns: 'a', ops: [['addr', 'cen1', '2001:db8::1/64']] }] })).toThrow(/not an IPv4 address/);
    expect(() => helperCommand({ apply: [{ ns: 'a', ops: [['addr', 'cen1', '10.0.0.1/33']] }] })).toThrow(/not an IPv4 address/);
    expect(() => helperCommand({ apply: [{ ns: 'a', ops: [['route', '10.0.0', 'cen1']] }] })).toThrow(/not an IPv4 address/);
    expect(() => helperCommand({ apply: [{ ns: 'a', ops: [['mtu', 'cen1', 67]] }] })).toThrow(/not an MTU/);
  });

  it('observes namespaces, links and default routes from the helper\'s one answer', async () => {
    const runner = new FakeRunner()
      .on(PYTHON3, [], {
        stdout: JSON.stringify({
          namespaces: ['a', 'other'],
          observed: { a: { links: [{ name: 'lo', up: true, addrs: [] }, { name: 'cen1', kind: 'veth', up: true, mtu: 1500, addrs: ['10.10.0.10/16'] }], defaultRoute: { via: '10.10.0.1', dev: 'cen1' } }, b: null },
        }),
      })
      .on('nft', ['list'], { exitCode: 1, stderr: 'No such file or directory' });
    const o = await observeTopology(runner, 'hostns', ['a', 'b']);
    expect([...o.namespaces]).toEqual(['a', 'other']);
    expect(o.nsLinks.get('a')?.get('cen1')).toEqual({ kind: 'veth', up: true, mtu: 1500, addrs: ['10.10.0.10/16'] });
    expect(o.defaultRoutes.get('a')).toEqual({ via: '10.10.0.1', dev: 'cen1' });
    expect(o.nsLinks.has('b')).toBe(false);
    // One helper process for all of them, and no `ip` per namespace.
    const helperCalls = runner.calls.filter((c) => c.cmd === PYTHON3);
    expect(helperCalls.map((c) => JSON.parse(c.input ?? ''))).toEqual([{ list: true, host: 'hostns', observe: ['a', 'b'] }]);
    expect(runner.calls.filter((c) => c.args.includes('-n') && c.args.includes('a'))).toEqual([]);
  });

  it('the executor fails on a helper error line, and on removals only when it is not "already gone"', async () => {
    const bad = new FakeRunner().on(PYTHON3, [], { exitCode: 1, stderr: 'Error: a: addr cen1 10.10.0.10/16: Permission denied\n' });
    await expect(execute(bad, commandsFor([{ op: 'addr-add', ns: 'a', dev: 'cen1', cidr: '10.10.0.10/16' }], 'netlink'))).rejects.toThrow(/Permission denied/);
    // The program itself is not repeated in the error.
    await expect(execute(bad, commandsFor([{ op: 'addr-add', ns: 'a', dev: 'cen1', cidr: '10.10.0.10/16' }], 'netlink'))).rejects.toThrow(/-c <\d+ characters>/);
  });
});
