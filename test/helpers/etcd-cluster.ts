/**
 * A real 3-member etcd cluster on loopback, for fault tests and benchmarks:
 * each member its own process and data dir, etcd's default limits (no limit
 * flags), so a member can be frozen (SIGSTOP), thawed, killed and restarted.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../packages/cli/src/embedded-etcd.js';

export interface ClusterMember {
  name: string;
  url: string;
  peerUrl: string;
  dataDir: string;
  process?: ChildProcess;
}

export interface EtcdCluster {
  members: ClusterMember[];
  /** Client URLs of every member. */
  urls: string[];
  /** The member that leads now (asks each member's /v3 maintenance status over HTTP). */
  leader(): Promise<ClusterMember>;
  /** Any member that does not lead. */
  follower(): Promise<ClusterMember>;
  freeze(m: ClusterMember): void;
  thaw(m: ClusterMember): void;
  /** SIGKILL, wait for exit. */
  kill(m: ClusterMember): Promise<void>;
  /** Start a killed member again on its data dir; resolves when it is healthy. */
  restart(m: ClusterMember): Promise<void>;
  /** Waits until a leader is elected and every running member reports it. */
  waitForLeader(timeoutMs?: number): Promise<ClusterMember>;
  stop(): Promise<void>;
}

async function statusOf(url: string, timeoutMs = 500): Promise<{ leader: string; memberId: string } | undefined> {
  try {
    const r = await fetch(`${url}/v3/maintenance/status`, { method: 'POST', body: '{}', signal: AbortSignal.timeout(timeoutMs) });
    if (!r.ok) return undefined;
    const j = (await r.json()) as { header: { member_id: string }; leader?: string };
    return { leader: j.leader ?? '0', memberId: j.header.member_id };
  } catch {
    return undefined;
  }
}

function spawnMember(m: ClusterMember, initialCluster: string, state: 'new' | 'existing'): ChildProcess {
  const args = [
    '--name', m.name,
    '--data-dir', m.dataDir,
    '--listen-client-urls', m.url,
    '--advertise-client-urls', m.url,
    '--listen-peer-urls', m.peerUrl,
    '--initial-advertise-peer-urls', m.peerUrl,
    '--initial-cluster', initialCluster,
    '--initial-cluster-state', state,
    '--initial-cluster-token', `sy-${process.pid}`,
    '--log-level', 'error',
  ];
  const child = spawn('etcd', args, { stdio: ['ignore', 'ignore', 'ignore'] });
  child.on('error', () => undefined);
  return child;
}

export async function startEtcdCluster(size = 3): Promise<EtcdCluster> {
  const root = mkdtempSync(join(tmpdir(), 'sy-cluster-'));
  const members: ClusterMember[] = [];
  for (let i = 0; i < size; i++) {
    const [c, p] = [await freePort(), await freePort()];
    members.push({ name: `m${i}`, url: `http://127.0.0.1:${c}`, peerUrl: `http://127.0.0.1:${p}`, dataDir: join(root, `m${i}`) });
  }
  const initialCluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  for (const m of members) m.process = spawnMember(m, initialCluster, 'new');

  const running = () => members.filter((m) => m.process && m.process.exitCode === null && m.process.signalCode === null);

  const cluster: EtcdCluster = {
    members,
    urls: members.map((m) => m.url),
    async leader() {
      for (const m of running()) {
        const s = await statusOf(m.url);
        if (!s || s.leader === '0') continue;
        for (const x of running()) if ((await statusOf(x.url))?.memberId === s.leader) return x;
      }
      throw new Error('no leader');
    },
    async follower() {
      const l = await cluster.leader();
      const f = running().find((m) => m !== l);
      if (!f) throw new Error('no follower');
      return f;
    },
    freeze(m) {
      m.process?.kill('SIGSTOP');
    },
    thaw(m) {
      m.process?.kill('SIGCONT');
    },
    async kill(m) {
      const p = m.process;
      if (!p || p.exitCode !== null || p.signalCode !== null) return;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGCONT');
      p.kill('SIGKILL');
      await exited;
    },
    async restart(m) {
      m.process = spawnMember(m, initialCluster, 'existing');
      const deadline = Date.now() + 20_000;
      while (!(await statusOf(m.url))) {
        if (Date.now() > deadline) throw new Error(`${m.name} did not come back`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async waitForLeader(timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          const l = await cluster.leader();
          const seen = await Promise.all(running().map((m) => statusOf(m.url)));
          const id = (await statusOf(l.url))?.memberId;
          if (seen.every((s) => s && s.leader === id)) return l;
        } catch {
          // not yet
        }
        if (Date.now() > deadline) throw new Error('etcd cluster elected no leader in time');
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    async stop() {
      await Promise.all(members.map((m) => cluster.kill(m)));
      rmSync(root, { recursive: true, force: true });
    },
  };
  await cluster.waitForLeader();
  return cluster;
}
