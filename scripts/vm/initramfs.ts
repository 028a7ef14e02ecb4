/**
 * Builds the initramfs of the Switchyard test VM from what is installed on
 * this machine — nothing is fetched: the Debian kernel (`linux-image-amd64`),
 * its virtio/9p modules, a static busybox (`busybox-static`) and
 * scripts/vm/init.sh. The archive is a gzipped cpio "newc" written here, so
 * no cpio tool is needed and no device node has to be created on the host.
 *
 * Usable from the command line too:
 *   node --import tsx scripts/vm/initramfs.ts OUT.cpio.gz
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gunzipSync, gzipSync } from 'node:zlib';

export const INIT_SCRIPT = fileURLToPath(new URL('./init.sh', import.meta.url));

/** Modules the initramfs loads itself: enough to mount the host root over virtio-9p. */
export const INITRAMFS_MODULES = ['virtio_pci', 'virtio_rng', '9pnet_virtio', '9p'];

export interface Kernel {
  version: string;
  image: string;
  modulesDir: string;
}

/** Compares kernel versions ("6.1.0-56-amd64" < "6.1.0-112-amd64") numerically, part by part. */
function compareVersions(a: string, b: string): number {
  const pa = a.split(/[.-]/);
  const pb = b.split(/[.-]/);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? '';
    const y = pb[i] ?? '';
    const d = /^\d+$/.test(x) && /^\d+$/.test(y) ? Number(x) - Number(y) : x.localeCompare(y);
    if (d !== 0) return d;
  }
  return 0;
}

/**
 * The newest installed kernel whose modules include IPVS, or a sentence
 * saying why there is none. Discovered at run time: /boot/vmlinuz-<v> with
 * /lib/modules/<v>/kernel/net/netfilter/ipvs.
 */
export function findKernel(bootDir = '/boot', modulesRoot = '/lib/modules'): Kernel | string {
  const images = existsSync(bootDir) ? readdirSync(bootDir).filter((f) => f.startsWith('vmlinuz-')) : [];
  if (images.length === 0) return `no kernel image in ${bootDir} (apt-get install linux-image-amd64)`;
  const usable = images
    .map((f) => f.slice('vmlinuz-'.length))
    .filter((v) => existsSync(join(modulesRoot, v, 'modules.dep')) && existsSync(join(modulesRoot, v, 'kernel/net/netfilter/ipvs')))
    .sort(compareVersions);
  const version = usable.at(-1);
  if (!version) return `no kernel in ${bootDir} has IPVS modules under ${modulesRoot}/<version>/kernel/net/netfilter/ipvs`;
  return { version, image: join(bootDir, `vmlinuz-${version}`), modulesDir: join(modulesRoot, version) };
}

/** Is this file a statically linked ELF executable (no PT_INTERP program header)? */
export function isStaticElf(path: string): boolean {
  let b: Buffer;
  try {
    b = readFileSync(path);
  } catch {
    return false;
  }
  if (b.length < 64 || b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) return false; // ELF64, little-endian
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    if (b.readUInt32LE(phoff + i * phentsize) === 3 /* PT_INTERP */) return false;
  }
  return true;
}

/** Where busybox-static puts its binary; the dynamic `busybox` package would not run in the initramfs. */
export function findStaticBusybox(): string | undefined {
  return ['/bin/busybox', '/usr/bin/busybox'].find(isStaticElf);
}

/** Module name as modprobe spells it ("virtio-rng" and "virtio_rng" are the same module). */
const modName = (path: string) =>
  (path.split('/').at(-1) ?? '')
    .replace(/\.ko(\.(xz|zst|gz))?$/, '')
    .replace(/-/g, '_');

/**
 * The module files to load for `wanted`, dependencies first, each once,
 * from modules.dep. Built-in modules (modules.builtin) need no file.
 */
export function moduleLoadOrder(modulesDir: string, wanted: string[]): string[] {
  const deps = new Map<string, { path: string; deps: string[] }>();
  for (const line of readFileSync(join(modulesDir, 'modules.dep'), 'utf8').split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (m) deps.set(modName(m[1]), { path: m[1], deps: m[2].split(/\s+/).filter(Boolean) });
  }
  const builtinFile = join(modulesDir, 'modules.builtin');
  const builtin = new Set(existsSync(builtinFile) ? readFileSync(builtinFile, 'utf8').split('\n').filter(Boolean).map(modName) : []);
  const order: string[] = [];
  const visit = (name: string, from: string) => {
    if (builtin.has(name) || order.some((p) => modName(p) === name)) return;
    const entry = deps.get(name);
    if (!entry) throw new Error(`module ${name} (needed by ${from}) is neither in modules.dep nor built in (${modulesDir})`);
    for (const d of entry.deps) visit(modName(d), name);
    order.push(entry.path);
  };
  for (const w of wanted) visit(modName(w), 'the initramfs');
  return order;
}

/**
 * A module file's contents, uncompressed: Debian 12 ships plain .ko, newer
 * kernels .ko.xz or .ko.zst, and busybox insmod reads neither reliably
 * (zstd never), so decompress here, with xz-utils/zstd when present or
 * busybox's xzcat for .xz.
 */
export function readModule(path: string, busybox: string): Buffer {
  if (path.endsWith('.ko')) return readFileSync(path);
  if (path.endsWith('.ko.gz')) return gunzipSync(readFileSync(path));
  const tool = path.endsWith('.ko.xz')
    ? [['xz', '-dc'], [busybox, 'xzcat']]
    : path.endsWith('.ko.zst')
      ? [['zstd', '-dcq']]
      : [];
  for (const [cmd, ...args] of tool) {
    try {
      return execFileSync(cmd, [...args, path], { maxBuffer: 256 * 1024 * 1024, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch {
      // next tool
    }
  }
  throw new Error(`cannot decompress ${path} (install xz-utils or zstd)`);
}

// ---------- cpio "newc" ----------

interface CpioEntry {
  name: string;
  mode: number;
  data?: Buffer;
  rdev?: [number, number];
}

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);

/** Writes a cpio archive in the "newc" format the kernel unpacks as its initramfs. */
export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  const all = [...entries, { name: 'TRAILER!!!', mode: 0 }];
  all.forEach((e, i) => {
    const data = e.data ?? Buffer.alloc(0);
    const name = Buffer.from(`${e.name}\0`);
    const fields = [
      i + 1, // ino
      e.mode,
      0, // uid
      0, // gid
      (e.mode & 0o170000) === S_IFDIR ? 2 : 1, // nlink
      0, // mtime
      data.length,
      0, // devmajor
      0, // devminor
      e.rdev?.[0] ?? 0,
      e.rdev?.[1] ?? 0,
      name.length,
      0, // check
    ];
    const header = Buffer.from(`070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}`);
    parts.push(header, name, pad4(header.length + name.length), data, pad4(data.length));
  });
  return Buffer.concat(parts);
}

export interface BuiltInitramfs {
  kernel: Kernel;
  /** Module files loaded by /init, in order. */
  modules: string[];
  bytes: number;
}

/** Builds the initramfs into `out` (gzipped cpio) for `kernel`. */
export function buildInitramfs(out: string, kernel: Kernel, busybox = findStaticBusybox()): BuiltInitramfs {
  if (!busybox) throw new Error('no static busybox (apt-get install busybox-static)');
  const modules = moduleLoadOrder(kernel.modulesDir, INITRAMFS_MODULES);
  const entries: CpioEntry[] = [
    ...['bin', 'sbin', 'usr', 'usr/bin', 'usr/sbin', 'dev', 'proc', 'sys', 'mnt', 'mods', 'tmp'].map((name) => ({ name, mode: S_IFDIR | 0o755 })),
    // The kernel opens /dev/console for /init before devtmpfs is mounted.
    { name: 'dev/console', mode: S_IFCHR | 0o600, rdev: [5, 1] },
    { name: 'bin/busybox', mode: S_IFREG | 0o755, data: readFileSync(busybox) },
    { name: 'bin/sh', mode: S_IFLNK | 0o777, data: Buffer.from('busybox') },
    { name: 'init', mode: S_IFREG | 0o755, data: readFileSync(INIT_SCRIPT) },
    ...modules.map((p) => ({ name: `mods/${modName(p)}.ko`, mode: S_IFREG | 0o644, data: readModule(join(kernel.modulesDir, p), busybox) })),
    { name: 'mods/order', mode: S_IFREG | 0o644, data: Buffer.from(`${modules.map(modName).join('\n')}\n`) },
  ];
  const archive = gzipSync(cpioNewc(entries), { level: 1 });
  writeFileSync(out, archive);
  return { kernel, modules, bytes: archive.length };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const out = process.argv[2];
  const kernel = findKernel();
  if (!out || typeof kernel === 'string') {
    console.error(out ? kernel : 'usage: node --import tsx scripts/vm/initramfs.ts OUT.cpio.gz');
    process.exit(2);
  }
  const built = buildInitramfs(out, kernel);
  console.log(`${out}: kernel ${kernel.version}, ${built.modules.length} modules, ${built.bytes} bytes`);
}
