/**
 * `--nft-local-vips` on a kernel with the dummy driver (the kernel the other
 * test layers run on has none), in the qemu VM of ipvs.test.ts: the VM's root
 * namespace is the balancer, with no default route, and a process there
 * connects to the VIP. Without the flag connect() fails before nftables
 * (no route); with it the VIP is on the agent's dummy device and the output
 * chain balances the connections over both backends; deleting the service
 * takes the address off, and flush removes the device.
 *
 * Skips outside CI, saying why, when the VM cannot boot (as ipvs.test.ts).
 */
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { backendsScript, bundleForGuest, canRunVm, GUEST_MODULES, runInVm } from './harness.js';
import { NFT_VM, type NftVmPhase, type NftVmResult } from './nft-local-vips-scenario.js';

const vm = canRunVm();
const skip = vm !== true && process.env.CI !== 'true';
if (skip) console.warn(`[vm] skipping the --nft-local-vips tests (set CI=true to make this a failure): ${vm}`);

const NFT_MODULES = ['nf_tables', 'nf_nat', 'nft_chain_nat', 'nft_nat', 'nft_masq', 'nft_numgen', 'nft_hash', 'nft_ct'];

/** Two backend namespaces (busybox httpd answering their names) routed through the VM's root namespace; then the dataplane. */
const GUEST_SCRIPT = `set -eu
echo 1 > /proc/sys/net/ipv4/ip_forward
${backendsScript(NFT_VM.backends, NFT_VM.port)}

exec node /run/sy-vm/nft-guest.mjs
`;

describe.skipIf(skip)('--nft-local-vips on a kernel with dummy devices (qemu VM)', () => {
  let result: NftVmResult;
  const phase = (name: string): NftVmPhase => {
    const p = result.phases.find((x) => x.name === name);
    if (!p) throw new Error(`the guest reported no phase ${name}`);
    return p;
  };
  const count = (answers: string[]) => {
    const out: Record<string, number> = {};
    for (const a of answers) out[a.startsWith('ERR ') ? 'ERR' : a] = (out[a.startsWith('ERR ') ? 'ERR' : a] ?? 0) + 1;
    return out;
  };

  beforeAll(async () => {
    if (vm !== true) throw new Error(vm);
    const guest = await bundleForGuest(fileURLToPath(new URL('./nft-local-vips-guest.ts', import.meta.url)));
    const run = await runInVm(GUEST_SCRIPT, { timeoutMs: 600_000, modules: [...GUEST_MODULES, ...NFT_MODULES], files: { 'nft-guest.mjs': guest } });
    const line = run.stdout.split('\n').find((l) => l.startsWith('SY-VM-RESULT '));
    console.log(`[vm] boot ${run.bootMs} ms, VM total ${run.totalMs} ms, guest exit ${run.exitCode}`);
    if (run.exitCode !== 0 || !line) {
      throw new Error(`the guest script failed (exit ${run.exitCode})\n--- stdout ---\n${run.stdout}\n--- stderr ---\n${run.stderr}\n--- console ---\n${run.console}`);
    }
    result = JSON.parse(line.slice('SY-VM-RESULT '.length)) as NftVmResult;
    for (const p of result.phases) console.log(`[vm] ${p.name}: ${JSON.stringify(count(p.answers))}, addresses ${JSON.stringify(p.addresses)}, device ${p.deviceKind ?? 'none'}`);
  });

  it('without the flag and without a route, connect() fails before nftables sees a packet', () => {
    const p = phase('off');
    expect(p.failed).toBe(false);
    expect(p.addresses).toEqual([]);
    expect(p.answers).toHaveLength(2);
    for (const a of p.answers) expect(a).toMatch(/^ERR .*(Network is unreachable|Couldn't connect)/);
  });

  it('with the flag, the VIP is on the dummy device and a local process is balanced over both backends', () => {
    const p = phase('on');
    expect(p.reports).toEqual([]);
    expect(p.failed).toBe(false);
    expect(p.deviceKind).toBe('dummy');
    expect(p.addresses).toEqual([NFT_VM.vip]);
    expect(count(p.answers)).toEqual({ 'backend-1': 10, 'backend-2': 10 });
  });

  it('deleting the service takes its VIP off the device; flush removes the device', () => {
    const p = phase('deleted');
    expect(p.addresses).toEqual([]);
    for (const a of p.answers) expect(a).toMatch(/^ERR /);
    expect(result.deviceAfterFlush).toBe(false);
  });
});
