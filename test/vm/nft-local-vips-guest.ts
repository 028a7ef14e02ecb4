/**
 * Runs INSIDE the test VM (see nft-local-vips.test.ts): the agent's nftables
 * dataplane with a real `ExecaRunner`, in the VM's root namespace, which is
 * the balancer — it has no default route, so the VIP routes nowhere until
 * `--nft-local-vips` puts it on the dummy device. A process here (curl)
 * connects to the VIP after each phase; the result is one `SY-VM-RESULT
 * {json}` line. It asserts nothing itself: the vitest file on the host does.
 */
import { pino } from 'pino';
import { ServiceInput, toService } from '../../packages/shared/src/schemas/l4.js';
import { DeviceAddresses } from '../../packages/agent/src/l4/local-addresses.js';
import { NftExecutor } from '../../packages/agent/src/l4/nftables/executor.js';
import { ExecaRunner } from '../../packages/agent/src/exec/runner.js';
import { NftDataplane } from '../../packages/agent/src/l4/nftables/dataplane.js';
import { NFT_VM, type NftVmPhase, type NftVmResult } from './nft-local-vips-scenario.js';

const runner = new ExecaRunner({ timeoutMs: 120_000 });
const log = pino({ level: 'silent' });
const device = new DeviceAddresses(runner, NFT_VM.device);
const dataplane = (enabled: boolean) => new NftDataplane(new NftExecutor(runner, { table: NFT_VM.table }), NFT_VM.table, log, { localVips: { device, enabled } });

const service = toService(
  ServiceInput.parse({ host: NFT_VM.vip, port: 80, type: 'tcp', scheduler: 'rr', servers: NFT_VM.backends.map((b) => ({ host: b.address, port: NFT_VM.port, forwarder: 'm' })) }),
);
const desired = new Map([[service.id, service]]);

async function connect(n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await runner.run('curl', ['-sS', '-m', '5', `http://${NFT_VM.vip}/`], { allowFail: true });
    out.push(res.exitCode === 0 ? res.stdout.trim() : `ERR ${res.stderr.trim()}`);
  }
  return out;
}

async function deviceKind(): Promise<string | undefined> {
  const res = await runner.run('ip', ['-j', '-d', 'link', 'show', 'dev', NFT_VM.device], { allowFail: true });
  if (res.exitCode !== 0) return undefined;
  return (JSON.parse(res.stdout) as { linkinfo?: { info_kind?: string } }[])[0]?.linkinfo?.info_kind;
}

async function phase(name: string, outcome: Awaited<ReturnType<NftDataplane['sync']>>, requests: number): Promise<NftVmPhase> {
  return {
    name,
    failed: outcome.failed,
    reports: [...outcome.reports.values()].flat().map((r) => `${r.level}: ${r.message}`),
    answers: await connect(requests),
    addresses: await device.observe(),
    ...((await deviceKind()) ? { deviceKind: await deviceKind() } : {}),
  };
}

const phases: NftVmPhase[] = [];
const off = dataplane(false);
phases.push(await phase('off', await off.sync(desired), 2));
const on = dataplane(true);
phases.push(await phase('on', await on.sync(desired), 20));
phases.push(await phase('deleted', await on.sync(new Map(), new Set([service.id])), 2));
await on.flush();
const result: NftVmResult = { phases, deviceAfterFlush: (await deviceKind()) !== undefined };
console.log(`SY-VM-RESULT ${JSON.stringify(result)}`);
// The persistent `nft -i` and `nft monitor` the executors started would keep this process alive.
off.close();
on.close();
