/**
 * Runs a shell script in the IPVS test VM by hand, for debugging a guest:
 *
 *   node --import tsx scripts/vm/run.ts FILE.sh      (or - for stdin)
 *
 * Boots the machine's Debian kernel under qemu (TCG), runs FILE.sh as root in
 * a read-only chroot of this machine's root with IPVS and its schedulers
 * loaded, prints its stdout and stderr, and exits with its exit code.
 * Environment: SY_VM_TIMEOUT_MS (default 600000), SY_VM_ACCEL (tcg|kvm).
 */
import { readFileSync } from 'node:fs';
import { canRunVm, runInVm } from '../../test/vm/harness.js';

const file = process.argv[2];
if (!file) {
  console.error('usage: node --import tsx scripts/vm/run.ts FILE.sh|-');
  process.exit(2);
}
const can = canRunVm();
if (can !== true) {
  console.error(can);
  process.exit(2);
}
const accel = process.env.SY_VM_ACCEL === 'kvm' ? 'kvm' : 'tcg';
const res = await runInVm(readFileSync(file === '-' ? 0 : file, 'utf8'), { timeoutMs: Number(process.env.SY_VM_TIMEOUT_MS ?? 600_000), accel });
process.stdout.write(res.stdout);
process.stderr.write(res.stderr);
console.error(`[vm] boot ${res.bootMs} ms, total ${res.totalMs} ms, exit ${res.exitCode}`);
process.exit(res.exitCode);
