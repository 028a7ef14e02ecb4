/**
 * Real IPVS for tests: boots the machine's Debian kernel (which has IPVS as
 * modules, unlike the kernel these tests run on) in a qemu VM and runs a shell
 * script there, as root, in a chroot of this machine's own root filesystem
 * (read-only over 9p). So the script sees the host's node, ipvsadm, ip,
 * python3 and this repository at the same paths — see
 * ../../../shared/notes/real-dataplanes.md for how the recipe was found.
 *
 * The job travels over a second, writable 9p share (/run/sy-vm in the guest):
 * the script and any `files` go in, stdout/stderr/exit code come back. The
 * serial console only carries kernel messages and "sy-vm: …" progress lines.
 *
 * Pure emulation (TCG) by default: a KVM guest hangs right after "Probing
 * EDD" on these machines (nested virtualization). Expect 10–35 s per boot,
 * depending on the host's load (bench/results/ipvs-vm.md).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildInitramfs, findKernel, findStaticBusybox, type Kernel } from '../../scripts/vm/initramfs.js';

/** Modules the guest loads before the script runs: IPVS with every scheduler, and what test networks need. */
export const GUEST_MODULES = [
  'ip_vs',
  'ip_vs_rr',
  'ip_vs_wrr',
  'ip_vs_lc',
  'ip_vs_wlc',
  'ip_vs_lblc',
  'ip_vs_lblcr',
  'ip_vs_dh',
  'ip_vs_sh',
  'ip_vs_sed',
  'ip_vs_nq',
  'nf_conntrack',
  'dummy',
  'veth',
  'bridge',
];

const QEMU = 'qemu-system-x86_64';

export interface VmOptions {
  /** Kill the VM after this long (ms). Default 10 minutes. */
  timeoutMs?: number;
  /** 'tcg' (default, pure emulation) or 'kvm'. */
  accel?: 'tcg' | 'kvm';
  memoryMb?: number;
  cpus?: number;
  /** Modules to modprobe in the guest before the script (default GUEST_MODULES). */
  modules?: string[];
  /** Extra files for the script, written next to it: the guest sees them under /run/sy-vm/. */
  files?: Record<string, string>;
}

export interface VmResult {
  stdout: string;
  stderr: string;
  exitCode: number;
  /** The serial console: kernel messages and the init's "sy-vm: …" progress lines. */
  console: string;
  /** From starting qemu until the script started (ms). */
  bootMs: number;
  /** From starting qemu until it exited (ms). */
  totalMs: number;
}

/** A VM that did not finish: timed out, failed to boot, or failed to prepare the guest. */
export class VmError extends Error {
  constructor(
    message: string,
    readonly partial: Partial<VmResult>,
  ) {
    const tail = (s = '') => s.split('\n').slice(-30).join('\n');
    super(`${message}\n--- console (tail) ---\n${tail(partial.console)}\n--- stdout (tail) ---\n${tail(partial.stdout)}\n--- stderr (tail) ---\n${tail(partial.stderr)}`);
    this.name = 'VmError';
  }
}

function onPath(cmd: string): boolean {
  return spawnSync('/bin/sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore', env: { ...process.env, PATH: `${process.env.PATH ?? ''}:/usr/sbin:/sbin` } }).status === 0;
}

/**
 * Whether a VM can be booted here: `true`, or the reason it cannot
 * (naming the Debian package to install).
 */
export function canRunVm(): true | string {
  const missing: string[] = [];
  if (!onPath(QEMU)) missing.push(`${QEMU} (qemu-system-x86)`);
  if (!findStaticBusybox()) missing.push('a static busybox (busybox-static)');
  if (!onPath('ipvsadm')) missing.push('ipvsadm (ipvsadm)');
  if (!onPath('curl')) missing.push('curl (curl)');
  if (!onPath('modprobe')) missing.push('modprobe (kmod)');
  const kernel = findKernel();
  if (typeof kernel === 'string') missing.push(kernel);
  if (missing.length > 0) return `cannot boot the IPVS test VM, missing: ${missing.join('; ')}`;
  return true;
}

/** Kills a process group (qemu and its `timeout` wrapper). */
function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

// Every VM this process started, so none outlives it (a test crashing, vitest exiting).
const running = new Set<number>();
process.once('exit', () => {
  for (const pid of running) killGroup(pid);
});

/**
 * The script the guest runs (as /run/sy-vm/guest.sh): load the modules, bring
 * lo up (ipvsadm refuses masquerading real servers with lo down: "address not
 * unicast"), record that setup passed, then run the caller's script.
 */
function guestScript(modules: string[]): string {
  return [
    'cd /',
    // Phase markers let the harness tell "the guest could not be prepared" from "the script failed".
    `modprobe -a ${modules.join(' ')} || { echo "sy-vm: modprobe -a ${modules.join(' ')} failed" >&2; exit 1; }`,
    'ip link set lo up || exit 1',
    'echo script > /run/sy-vm/phase',
    'exec /bin/sh /run/sy-vm/script.sh',
    '',
  ].join('\n');
}

/** This checkout, as the guest must see it (at the same path). */
const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url)).replace(/\/$/, '');

function qemuArgs(kernel: Kernel, initrd: string, jobDir: string, o: Required<Pick<VmOptions, 'accel' | 'memoryMb' | 'cpus'>>): string[] {
  return [
    '-accel', o.accel,
    ...(o.accel === 'kvm' ? ['-cpu', 'host'] : ['-cpu', 'max']),
    '-m', String(o.memoryMb),
    '-smp', String(o.cpus),
    '-nodefaults', '-no-user-config', '-display', 'none', '-monitor', 'none', '-serial', 'stdio', '-no-reboot',
    '-kernel', kernel.image,
    '-initrd', initrd,
    // panic=-1: reboot at once on panic, and -no-reboot turns that into qemu exiting.
    '-append', 'console=ttyS0 panic=-1 quiet loglevel=3 mitigations=off',
    '-device', 'virtio-rng-pci',
    '-virtfs', 'local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap',
    '-virtfs', `local,path=${jobDir},mount_tag=job,security_model=none,multidevs=remap`,
    // The repository once more, mounted at its own path: a checkout under /tmp
    // (CI's clone may be one) would otherwise be hidden by the guest's fresh /tmp.
    '-virtfs', `local,path=${REPO_ROOT},mount_tag=repo,security_model=none,readonly=on,multidevs=remap`,
  ];
}

/** The part of esbuild's API used here (esbuild is tsx's own dependency; see bundleForGuest). */
interface EsbuildPluginBuild {
  onLoad(
    options: { filter: RegExp },
    callback: (args: { path: string }) => { contents: string; loader: string; resolveDir: string } | undefined,
  ): void;
}
interface Esbuild {
  build(options: Record<string, unknown>): Promise<{ outputFiles?: { text: string }[] }>;
}

const LOADERS: Record<string, string> = { '.ts': 'ts', '.mts': 'ts', '.cts': 'ts', '.tsx': 'tsx', '.js': 'js', '.mjs': 'js', '.cjs': 'js', '.jsx': 'jsx' };

/**
 * Keeps every bundled module's own location: its `__dirname`, `__filename`
 * and `import.meta.url` become the file's real path, which the guest sees
 * unchanged (it runs in a chroot of this very filesystem). Needed because
 * some dependencies read files next to their code at run time (etcd3 loads
 * `${__dirname}/../proto/rpc.proto`), and an ES module bundle has no
 * `__dirname` at all.
 */
const keepModuleLocations = {
  name: 'keep-module-locations',
  setup(build: EsbuildPluginBuild) {
    build.onLoad({ filter: /\.[cm]?[jt]sx?$/ }, (args) => {
      const text = readFileSync(args.path, 'utf8');
      if (!/__dirname|__filename|import\.meta\.url/.test(text)) return undefined;
      const contents =
        `var __dirname = ${JSON.stringify(dirname(args.path))}, __filename = ${JSON.stringify(args.path)};\n` +
        text.replace(/import\.meta\.url/g, JSON.stringify(pathToFileURL(args.path).href));
      return { contents, loader: LOADERS[extname(args.path)] ?? 'js', resolveDir: dirname(args.path) };
    });
  },
};

/**
 * Bundles a TypeScript entry and everything it imports (workspace packages
 * from their sources, via the "source" condition) into one ES module the
 * guest runs with plain `node`. Why: under emulation, `node --import tsx`
 * spent 40–90 s resolving and transforming hundreds of files over 9p before
 * the first line ran; the bundle loads in a few seconds. The code is the same
 * source, compiled on the host. esbuild is reached through tsx (a declared
 * dev dependency, which depends on it) so no undeclared package is imported.
 */
export async function bundleForGuest(entry: string): Promise<string> {
  const requireFromTsx = createRequire(createRequire(import.meta.url).resolve('tsx/package.json'));
  const esbuild = requireFromTsx('esbuild') as Esbuild;
  const out = await esbuild.build({
    entryPoints: [entry],
    bundle: true,
    write: false,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    conditions: ['source'],
    logLevel: 'silent',
    plugins: [keepModuleLocations],
    // CommonJS dependencies inside an ES module bundle still call require() for node builtins.
    banner: { js: "import { createRequire as __syCreateRequire } from 'node:module'; const require = __syCreateRequire(import.meta.url);" },
  });
  const text = out.outputFiles?.[0]?.text;
  if (!text) throw new Error(`esbuild produced nothing for ${entry}`);
  return text;
}

const readIf = (p: string) => (existsSync(p) ? readFileSync(p, 'utf8') : '');

/**
 * Boots a VM, runs `script` (POSIX sh) in the chroot of the host root and
 * powers off. Resolves with the script's output and exit code; rejects with a
 * `VmError` (console and partial output attached) when the VM hangs past the
 * timeout or never got to run the script.
 */
export async function runInVm(script: string, opts: VmOptions = {}): Promise<VmResult> {
  const kernel = findKernel();
  if (typeof kernel === 'string') throw new Error(kernel);
  const o = { timeoutMs: 600_000, accel: 'tcg' as const, memoryMb: 1024, cpus: 2, modules: GUEST_MODULES, ...opts };
  const dir = mkdtempSync(join(tmpdir(), 'sy-vm-'));
  const jobDir = join(dir, 'job');
  try {
    mkdirSync(jobDir);
    const initrd = join(dir, 'initrd.cpio.gz');
    buildInitramfs(initrd, kernel);
    writeFileSync(join(jobDir, 'guest.sh'), guestScript(o.modules));
    writeFileSync(join(jobDir, 'script.sh'), script);
    writeFileSync(join(jobDir, 'phase'), 'setup\n');
    writeFileSync(join(jobDir, 'repo-path'), `${REPO_ROOT}\n`);
    for (const [name, text] of Object.entries(o.files ?? {})) writeFileSync(join(jobDir, name), text);

    const started = performance.now();
    let bootMs = -1;
    let consoleText = '';
    // qemu runs under coreutils `timeout` in a process group of its own: our
    // timer kills the whole group, and should this process die without
    // running its exit handler (vitest killed with SIGKILL), `timeout` still
    // ends qemu shortly after the deadline.
    const deadline = `${Math.ceil(o.timeoutMs / 1000) + 15}s`;
    const child = spawn('timeout', ['-s', 'KILL', deadline, QEMU, ...qemuArgs(kernel, initrd, jobDir, o)], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    if (child.pid) running.add(child.pid);
    const onOutput = (d: Buffer) => {
      consoleText += d.toString();
      if (bootMs < 0 && consoleText.includes('sy-vm: job start')) bootMs = Math.round(performance.now() - started);
    };
    child.stdout.on('data', onOutput);
    child.stderr.on('data', onOutput);

    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      if (child.pid) killGroup(child.pid);
    }, o.timeoutMs);
    const exit = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', (code) => resolve(code));
    }).finally(() => {
      clearTimeout(timer);
      if (child.pid) running.delete(child.pid);
    });
    const totalMs = Math.round(performance.now() - started);

    const partial = {
      console: consoleText.replace(/\r/g, ''),
      stdout: readIf(join(jobDir, 'stdout')),
      stderr: readIf(join(jobDir, 'stderr')),
      bootMs,
      totalMs,
    };
    if (timedOut) throw new VmError(`VM timed out after ${o.timeoutMs} ms and was killed`, partial);
    const code = readIf(join(jobDir, 'exit-code')).trim();
    if (code === '') throw new VmError(`VM stopped (qemu exit ${exit}) before the script finished`, partial);
    if (readIf(join(jobDir, 'phase')).trim() !== 'script') throw new VmError('the guest could not be prepared', partial);
    return { ...partial, exitCode: Number(code) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Guest shell lines for backends: one namespace each behind a veth from the
 * VM's root namespace (the `.1` of its /24), answering its name with busybox
 * httpd on `port`; waits until each listens.
 */
export function backendsScript(backends: readonly { ns: string; address: string; name: string }[], port: number): string {
  const portHex = port.toString(16).toUpperCase().padStart(4, '0');
  return backends
    .map(
      (b, i) => `
ip netns add ${b.ns}
ip link add ${b.ns}h type veth peer name eth0 netns ${b.ns}
ip addr add ${b.address.replace(/\.\d+$/, '.1')}/24 dev ${b.ns}h
ip link set ${b.ns}h up
ip -n ${b.ns} link set lo up
ip -n ${b.ns} addr add ${b.address}/24 dev eth0
ip -n ${b.ns} link set eth0 up
ip -n ${b.ns} route add default via ${b.address.replace(/\.\d+$/, '.1')}
mkdir -p /tmp/www-${i}
echo ${b.name} > /tmp/www-${i}/index.html
ip netns exec ${b.ns} busybox httpd -p ${b.address}:${port} -h /tmp/www-${i}
n=0
until ip netns exec ${b.ns} grep -q ':${portHex} 00000000:0000 0A' /proc/net/tcp; do
  n=$((n + 1)); [ $n -lt 300 ] || { echo "${b.name} never listened" >&2; exit 1; }; sleep 0.2
done`,
    )
    .join('\n');
}
