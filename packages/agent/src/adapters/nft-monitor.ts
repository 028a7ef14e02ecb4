/**
 * Tells whether anything but the agent changed its table, so a periodic
 * full resync can skip reading 10,000 services back (`nft -j list table`:
 * 1.3–2 s of nft's CPU, restarted by every change applied meanwhile) when
 * nothing foreign happened — the drift it exists to undo.
 *
 * It follows `nft monitor`. The kernel sends every committed transaction's
 * objects, then one NEWGEN message, which nft prints as
 * `# new generation N by process PID (comm)` (nf_tables_commit →
 * nf_tables_gen_notify). A generation whose events name `inet <table>` and
 * whose PID is not one of the agent's own nft processes is drift. So is
 * anything the monitor cannot vouch for: it was not running, it has not yet
 * shown it is subscribed (it prints nothing until an event comes; `arm()`
 * makes one), the socket overflowed (`# ERROR: We lost some netlink
 * events!`), or it died. Any of these bumps `epoch`; a resync may skip the
 * read only when `epoch` is what it was when the kernel was last known to
 * equal the model.
 *
 * PIDs are compared as the kernel reports them (the initial PID namespace):
 * an agent in a container of its own PID namespace never recognises its own
 * transactions, and every resync reads the table back as before.
 *
 * What follows the events: by default a small python3 program
 * (`MONITOR_PROGRAM`, stdlib only) subscribed to the kernel's nftables
 * netlink group, which reads only each message's type, family and table and
 * prints the same lines `nft monitor` would for what this class reads (one
 * `<family> <table>` line per table a generation touched, the generation
 * line, the lost-events line). `nft monitor` itself keeps a cache of every
 * set element it has seen — ~95 MiB at 10,000 × 5, whatever events it is
 * told to follow, and it loads the whole ruleset when it starts — and
 * formats every element of a first load as text (~1 s of CPU); the program
 * formats nothing and runs as a thread of the spawn helper (exec/spawner.ts),
 * which enters the namespace for that thread alone: no process of its own
 * (it was a python3 process, ~9.4 MiB). With a runner without a helper it
 * is its own python3 process; without python3, `nft monitor` it is.
 */
import type { Runner } from '../exec/runner.js';
import { PYTHON3, pythonAvailable } from '../exec/python.js';

export interface NftMonitorOptions {
  table: string;
  netns?: string;
  /** True for the PIDs of the agent's own nft processes. */
  isOwn: (pid: number) => boolean;
  /**
   * What follows the events: the netlink program (default when python3 is
   * there; in the spawn helper when the runner has one, else a python3
   * process of its own) or `nft monitor`.
   */
  source?: 'netlink' | 'nft';
}

/**
 * Subscribes to NFNLGRP_NFTABLES and prints, per generation, one
 * `<family> <table>` line per inet/netdev table its messages named, then
 * `# new generation N by process PID (comm)`; ENOBUFS (the socket overflowed)
 * prints `nft monitor`'s lost-events line.
 */
export const MONITOR_PROGRAM = String.raw`
import errno, socket, struct, sys
try:
    emit, stopping  # given when it runs in the spawn helper (exec/spawner.ts)
except NameError:  # a python3 process of its own: print, and run until killed
    def emit(text):
        sys.stdout.write(text)
        sys.stdout.flush()
    stopping = None
NETLINK_NETFILTER, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES = 12, 270, 1, 7
SUBSYS_NFTABLES, NFT_MSG_NEWGEN = 10, 15
FAMILIES = {1: 'inet', 5: 'netdev'}
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
try:
    s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE (root)
except OSError:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
s.bind((0, 0))
s.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
if stopping is not None:
    s.settimeout(1.0)  # to see stopping
buf = bytearray(1 << 20)
seen = set()

def name(v):
    return bytes(v).split(b'\x00', 1)[0].decode('utf-8', 'replace')

def attrs(off, end):
    while off + 4 <= end:
        alen, atype = struct.unpack_from('=HH', buf, off)
        if alen < 4 or off + alen > end:
            return
        yield atype & 0x3fff, buf[off + 4:off + alen]
        off += (alen + 3) & ~3

while stopping is None or not stopping.is_set():
    try:
        n = s.recv_into(buf)
    except socket.timeout:
        continue
    except OSError as e:
        if e.errno == errno.ENOBUFS:
            seen.clear()
            emit('# ERROR: We lost some netlink events!\n')
            continue
        raise
    off = 0
    while off + 20 <= n:
        mlen, mtype = struct.unpack_from('=IH', buf, off)
        if mlen < 16 or off + mlen > n:
            break
        if mtype >> 8 == SUBSYS_NFTABLES:
            msg, family = mtype & 0xff, buf[off + 16]
            if msg == NFT_MSG_NEWGEN:
                gen = pid = 0
                comm = ''
                for t, v in attrs(off + 20, off + mlen):
                    if t == 1:
                        gen = struct.unpack('>I', v[:4])[0]
                    elif t == 2:
                        pid = struct.unpack('>I', v[:4])[0]
                    elif t == 3:
                        comm = name(v)
                emit(''.join(seen) + '# new generation %d by process %d (%s)\n' % (gen, pid, comm))
                seen.clear()
            elif family in FAMILIES:
                for t, v in attrs(off + 20, off + mlen):
                    if t == 1:
                        seen.add('%s %s\n' % (FAMILIES[family], name(v)))
                        break
        off += (mlen + 3) & ~3
s.close()
`;

/** What follows the events: a process or a program in the spawn helper. */
interface Follower {
  kill(): void;
}

export class NftMonitor {
  private proc?: Follower;
  private buf = '';
  /** The current generation's events named our table. */
  private touched = false;
  private armedProc?: Follower;
  private stopped = false;
  /** Bumped on every foreign change to the table and on every gap in what was seen. */
  epoch = 0;
  /** Foreign generations that touched the table (for logs and tests). */
  foreign = 0;
  /** Processes started so far (tells one monitor process from the next). */
  starts = 0;
  /** `epoch` when the running process proved it is subscribed. */
  armedEpoch?: number;
  /** `epoch` just after the running process was started, and when. */
  startEpoch = 0;
  startedAt = 0;
  private readonly tableRe: RegExp;

  constructor(
    private readonly runner: Required<Pick<Runner, 'spawn'>> & Pick<Runner, 'program'>,
    private readonly opts: NftMonitorOptions,
  ) {
    this.tableRe = new RegExp(`\\b(?:inet|netdev) ${opts.table}(?:\\s|$)`);
  }

  /** Subscribed (proved by an event seen since it started) and running: `epoch` can be trusted from now on. */
  get armed(): boolean {
    return this.proc !== undefined && this.armedProc === this.proc;
  }

  start(): void {
    if (this.stopped || this.proc) return;
    this.buf = '';
    this.touched = false;
    const netlink = (this.opts.source ?? (pythonAvailable() ? 'netlink' : 'nft')) === 'netlink';
    const netns = this.opts.netns ? { netns: this.opts.netns } : {};
    const output = (d: string) => {
      if (this.proc === proc) this.feed(d);
    };
    const ended = () => {
      if (this.proc !== proc) return;
      this.proc = undefined;
      this.epoch++;
    };
    let proc: Follower;
    if (netlink && this.runner.program) {
      const program = this.runner.program(MONITOR_PROGRAM, { ...netns, onOutput: output, onEnd: ended });
      proc = { kill: () => program.stop() };
    } else {
      const [cmd, args] = netlink ? [PYTHON3, ['-I', '-S', '-u', '-c', MONITOR_PROGRAM]] : ['nft', ['monitor']];
      proc = this.runner.spawn(cmd, args, { ...netns, onStdout: output, onExit: ended });
    }
    this.proc = proc;
    this.starts++;
    this.epoch++;
    this.startEpoch = this.epoch;
    this.startedAt = performance.now();
  }

  stop(): void {
    this.stopped = true;
    this.proc?.kill();
    this.proc = undefined;
  }

  private feed(chunk: string): void {
    // One split per chunk: a first load prints ~60,000 lines, and slicing the rest of the buffer
    // after every line made that quadratic (seconds of this process's CPU).
    const lines = (this.buf + chunk).split('\n');
    this.buf = lines.pop() ?? '';
    for (const l of lines) this.line(l);
  }

  private line(l: string): void {
    const gen = /^# new generation \d+ by process (\d+)/.exec(l);
    if (gen) {
      const own = this.opts.isOwn(Number(gen[1]));
      if (own && !this.armed) {
        this.armedProc = this.proc;
        this.armedEpoch = this.epoch;
      }
      else if (!own && this.touched) {
        this.foreign++;
        this.epoch++;
      }
      this.touched = false;
    } else if (/lost some netlink events/i.test(l)) {
      this.epoch++;
    } else if (this.tableRe.test(l)) this.touched = true;
  }
}
