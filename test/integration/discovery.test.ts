/**
 * `GET /provide` against a real etcd with real websocket clients: the record
 * lives exactly as long as the connection, on the coordinator's one lease.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { CoordinatorLease } from '../../packages/coordinator/src/discovery/lease.js';
import { RecordWriter } from '../../packages/coordinator/src/discovery/record-writer.js';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { buildCoordinator } from '../../packages/coordinator/src/index.js';
import { startEtcd } from '../../packages/cli/src/embedded-etcd.js';
import { startCli } from '../helpers/cli.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { freePort, sharedEtcdUrl, startPrivateEtcd, uniquePrefix } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { provide, refused, terminateProviders } from '../helpers/providers.js';

const etcdClients: Etcd3[] = [];
function etcdClient(): Etcd3 {
  const c = new Etcd3({ hosts: sharedEtcdUrl() });
  etcdClients.push(c);
  return c;
}
afterAll(() => etcdClients.forEach((c) => c.close()));

/** A DNS root no other test uses, and its key directory. */
function uniqueRoot(): { root: string; dir: string } {
  const label = `t${randomBytes(5).toString('hex')}`;
  return { root: `${label}.test.local`, dir: `/skydns/local/test/${label}/` };
}

interface Kv {
  key: string;
  value: string;
  lease: string;
  modRevision: number;
}
async function records(etcd: Etcd3, dir: string): Promise<Kv[]> {
  const res = await etcd.getAll().prefix(dir).exec();
  return res.kvs.map((kv) => ({ key: kv.key.toString(), value: kv.value.toString(), lease: String(kv.lease), modRevision: Number(kv.mod_revision) }));
}

afterAll(() => terminateProviders());


function closed(ws: WebSocket): Promise<number> {
  return new Promise((resolve) => {
    if (ws.readyState === ws.CLOSED) return resolve(-1);
    ws.once('close', (code) => resolve(code));
  });
}

describe('/provide records', () => {
  let c: Coordinator;
  let base: string;
  let etcd: Etcd3;
  const { root, dir } = uniqueRoot();

  beforeAll(async () => {
    c = await testCoordinator('disco', { dnsRoot: root, providerTtlMs: 2000 });
    base = await c.listen();
    etcd = etcdClient();
  });
  afterAll(() => c.close());

  it('writes skyapi\'s record with the defaults: services category, peer host, priority 1, weight 100', async () => {
    const ws = await provide(base, 'service=foo&port=9999');
    const [kv] = await eventually(async () => {
      const r = await records(etcd, `${dir}services/foo/`);
      return r.length === 1 ? r : undefined;
    });
    // skyapi's id: sha1("foo" "services" "127.0.0.1" "9999"), computed with
    // Go's fmt.Fprint as skyapi's server does.
    expect(kv.key).toBe(`${dir}services/foo/10ec6ea983c7a572acb0a023b9d645f6765c5a68`);
    expect(JSON.parse(kv.value)).toEqual({ host: '127.0.0.1', port: 9999, priority: 1, weight: 100 });
    expect(kv.value).toBe('{"host":"127.0.0.1","port":9999,"priority":1,"weight":100}');
    expect(kv.lease).not.toBe('0');
    ws.close();
    await eventually(async () => ((await records(etcd, `${dir}services/foo/`)).length === 0 ? true : undefined));
  });

  it('files multi-level categories left to right as sub-domains (key reversed)', async () => {
    const ws = await provide(base, 'service=bar&port=80&category=services,production&host=10.1.2.3&priority=5&weight=7');
    const [kv] = await eventually(async () => {
      const r = await records(etcd, `${dir}production/services/bar/`);
      return r.length === 1 ? r : undefined;
    });
    expect(JSON.parse(kv.value)).toEqual({ host: '10.1.2.3', port: 80, priority: 5, weight: 7 });
    ws.close();
    await eventually(async () => ((await records(etcd, `${dir}production/`)).length === 0 ? true : undefined));
  });

  it('takes the peer address when host is 0.0.0.0 or ::, and keeps a host name', async () => {
    const a = await provide(base, 'service=any0&port=1&host=0.0.0.0');
    const b = await provide(base, 'service=any6&port=1&host=::');
    const d = await provide(base, 'service=named&port=1&host=Web1.Example.COM');
    const got = await eventually(async () => {
      const r = await records(etcd, `${dir}services/`);
      return r.length === 3 ? r : undefined;
    });
    const byService = Object.fromEntries(got.map((kv) => [kv.key.split('/').at(-2), JSON.parse(kv.value).host]));
    expect(byService).toEqual({ any0: '127.0.0.1', any6: '127.0.0.1', named: 'web1.example.com' });
    a.close();
    b.close();
    d.close();
    await eventually(async () => ((await records(etcd, dir)).length === 0 ? true : undefined));
  });

  it.each([
    ['', 'service is required'],
    ['service=foo', 'port is required'],
    ['port=80', 'service is required'],
    ['service=foo&port=0', 'port must be at least 1'],
    ['service=foo&port=65536', 'port must be at most 65535'],
    ['service=foo&port=8o', 'port must be a whole number'],
    ['service=foo.bar&port=80', 'service must be a DNS label'],
    ['service=foo&port=80&category=a,,b', 'category must be a comma-separated list of DNS labels'],
    ['service=foo&port=80&category=a/b', 'category must be a comma-separated list of DNS labels'],
    ['service=foo&port=80&host=not..a..host', 'host must be an IP address or a host name'],
    ['service=foo&port=80&priority=-1', 'priority must be a whole number'],
    ['service=foo&port=80&weight=70000', 'weight must be at most 65535'],
  ])('refuses %j with an error frame, closes, writes nothing', async (query, message) => {
    const before = (await etcd.get('/').exec()).header.revision;
    const { frame, code } = await refused(base, query);
    expect(frame.code).toBe('INVALID');
    expect(frame.error).toContain(message);
    expect(code).toBe(1008);
    const after = await etcd.getAll().prefix(dir).exec();
    expect(after.kvs).toHaveLength(0);
    // Nothing at all under the root was written since.
    const changed = await etcd.getAll().prefix(dir).exec();
    expect(changed.kvs.filter((kv) => Number(kv.mod_revision) > Number(before))).toHaveLength(0);
  });

  it('removes the record at once on close: deleted, not left to the lease', async () => {
    const sibling = await provide(base, 'service=quick&port=1001');
    const ws = await provide(base, 'service=quick&port=1000');
    const both = await eventually(async () => {
      const r = await records(etcd, `${dir}services/quick/`);
      return r.length === 2 ? r : undefined;
    });
    const kept = both.find((kv) => JSON.parse(kv.value).port === 1001);
    ws.close();
    // Nothing else would ever remove it while the coordinator lives (the
    // lease is kept alive; the ping sweep is 10 s away): a bound far above a
    // flush on a loaded machine still tells "at once" from "never".
    const left = await eventually(async () => {
      const r = await records(etcd, `${dir}services/quick/`);
      return r.length === 1 ? r : undefined;
    }, 5000, 10);
    // The sibling on the same lease is untouched: this was a delete, not an expiry.
    expect(left).toEqual([kept]);
    sibling.close();
    await eventually(async () => ((await records(etcd, `${dir}services/quick/`)).length === 0 ? true : undefined));
  });

  it('two providers of the same service, host and port have their own records: the first keeps skyapi\'s id, the second gets -2', async () => {
    const a = await provide(base, 'service=dup&port=7000&host=10.0.0.9');
    await eventually(async () => ((await records(etcd, `${dir}services/dup/`)).length === 1 ? true : undefined));
    const b = await provide(base, 'service=dup&port=7000&host=10.0.0.9');
    const both = await eventually(async () => {
      const r = await records(etcd, `${dir}services/dup/`);
      return r.length === 2 ? r : undefined;
    });
    const id = createHash('sha1').update('dupservices10.0.0.97000').digest('hex');
    expect(both.map((kv) => kv.key).sort()).toEqual([`${dir}services/dup/${id}`, `${dir}services/dup/${id}-2`]);
    expect(both[0].value).toBe(both[1].value);
    a.close();
    const [left] = await eventually(async () => {
      const r = await records(etcd, `${dir}services/dup/`);
      return r.length === 1 ? r : undefined;
    });
    // b's record stays, and stays put. Barrier instead of a sleep: the
    // writer applies changes in order, so once a later provider's record has
    // come and gone, anything a's close set off has reached etcd.
    const later = await provide(base, 'service=dupbarrier&port=1');
    await eventually(async () => ((await records(etcd, `${dir}services/dupbarrier/`)).length === 1 ? true : undefined));
    later.close();
    await eventually(async () => ((await records(etcd, `${dir}services/dupbarrier/`)).length === 0 ? true : undefined));
    expect(await records(etcd, `${dir}services/dup/`)).toEqual([left]);
    expect(left.key).toBe(`${dir}services/dup/${id}-2`);
    // The id a freed is free again: a third connection takes it, b keeps its own.
    const c3 = await provide(base, 'service=dup&port=7000&host=10.0.0.9');
    const again = await eventually(async () => {
      const r = await records(etcd, `${dir}services/dup/`);
      return r.length === 2 ? r : undefined;
    });
    expect(again.map((kv) => kv.key).sort()).toEqual([`${dir}services/dup/${id}`, `${dir}services/dup/${id}-2`]);
    c3.close();
    b.close();
    await eventually(async () => ((await records(etcd, `${dir}services/dup/`)).length === 0 ? true : undefined));
  });

  it('puts every record on one lease and writes nothing more while providers idle', async () => {
    const conns = await Promise.all(Array.from({ length: 20 }, (_, i) => provide(base, `service=idle${i % 3}&port=${2000 + i}`)));
    const first = await eventually(async () => {
      const r = await records(etcd, dir);
      return r.length === 20 ? r : undefined;
    });
    expect(new Set(first.map((kv) => kv.lease)).size).toBe(1);
    // At least three TTLs (2 s each) of idling: the lease is kept alive, no
    // key is rewritten. Checked all along, so a rewrite fails at once; a
    // slow machine only makes the window longer, never the test wrong.
    const lease = first[0].lease;
    const until = Date.now() + 3 * 2000 + 500;
    for (;;) {
      const now = await records(etcd, dir);
      expect(now.map((kv) => [kv.key, kv.modRevision, kv.lease])).toEqual(first.map((kv) => [kv.key, kv.modRevision, lease]));
      if (Date.now() > until) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    // Still alive at the end of the window: kept alive, not merely not yet expired.
    expect(Number((await etcd.leaseClient.leaseTimeToLive({ ID: lease, keys: false })).TTL)).toBeGreaterThan(0);
    conns.forEach((ws) => ws.close());
    await eventually(async () => ((await records(etcd, dir)).length === 0 ? true : undefined));
  }, 20_000);

  it('grants a new lease and re-puts the live records when the lease is lost', async () => {
    const ws = await provide(base, 'service=phoenix&port=4242');
    const [kv] = await eventually(async () => {
      const r = await records(etcd, `${dir}services/phoenix/`);
      return r.length === 1 ? r : undefined;
    });
    // Revoking the lease behind the coordinator's back deletes its records;
    // the next keep-alive tells the coordinator.
    await etcd.leaseClient.leaseRevoke({ ID: kv.lease });
    const [again] = await eventually(async () => {
      const r = await records(etcd, `${dir}services/phoenix/`);
      return r.length === 1 && r[0].lease !== kv.lease ? r : undefined;
    }, 5000);
    expect(again.key).toBe(kv.key);
    expect(again.value).toBe(kv.value);
    ws.close();
    await eventually(async () => ((await records(etcd, `${dir}services/phoenix/`)).length === 0 ? true : undefined));
  });
});

describe('heartbeat', () => {
  let c: Coordinator;
  let base: string;
  let etcd: Etcd3;
  const { root, dir } = uniqueRoot();
  beforeAll(async () => {
    c = await testCoordinator('disco-ping', { dnsRoot: root, pingIntervalMs: 200 });
    base = await c.listen();
    etcd = etcdClient();
  });
  afterAll(() => c.close());

  it('drops a peer that does not answer pings, and its record; a peer that does stays', async () => {
    const deaf = await provide(base, 'service=deaf&port=1', { autoPong: false });
    const alive = await provide(base, 'service=alive&port=1');
    await eventually(async () => ((await records(etcd, dir)).length === 2 ? true : undefined));
    let pings = 0;
    alive.on('ping', () => pings++);
    // Dropped at the second sweep after the unanswered ping (2 intervals,
    // 400 ms); nothing else would ever close it. 25 intervals of slack for a
    // loaded machine.
    await eventually(() => (deaf.readyState === WebSocket.CLOSED ? true : undefined), 5000);
    await eventually(async () => {
      const r = await records(etcd, dir);
      return r.length === 1 && r[0].key.includes('/alive/') ? true : undefined;
    }, 5000);
    // The answering peer survives many sweeps: counted by the pings it
    // answered, not by the clock.
    const seen = pings;
    await eventually(() => (pings >= seen + 6 ? true : undefined), 15_000);
    expect(alive.readyState).toBe(WebSocket.OPEN);
    const r = await records(etcd, dir);
    expect(r.map((kv) => kv.key.split('/').at(-2))).toEqual(['alive']);
    alive.close();
  });
});

describe('a coordinator killed with SIGKILL', () => {
  it('loses its records within --provider-ttl', async () => {
    const { root, dir } = uniqueRoot();
    const port = await freePort();
    const cli = startCli(
      ['coordinator', '--etcd', sharedEtcdUrl(), '--prefix', uniquePrefix('disco-kill'), '--listen', `127.0.0.1:${port}`, '--dns-root', root, '--provider-ttl', '2s', '--log-level', 'info'],
      /listening/i,
    );
    const etcd = etcdClient();
    try {
      await cli.ready;
      const conns = await Promise.all([1, 2, 3].map((i) => provide(`http://127.0.0.1:${port}`, `service=doomed&port=${i}`)));
      const before = await eventually(async () => {
        const r = await records(etcd, dir);
        return r.length === 3 ? r : undefined;
      }, 5000);
      // What makes them go within the TTL: one lease, granted with --provider-ttl.
      expect(new Set(before.map((kv) => kv.lease)).size).toBe(1);
      const lease = before[0].lease;
      expect(Number((await etcd.leaseClient.leaseTimeToLive({ ID: lease, keys: false })).grantedTTL)).toBe(2);
      cli.child.kill('SIGKILL');
      await Promise.all(conns.map(closed));
      // TTL 2 s (etcd checks expiry every 500 ms); a bound of three TTLs
      // leaves room for a loaded machine and still fails records that stay.
      await eventually(async () => ((await records(etcd, dir)).length === 0 ? true : undefined), 6000, 50);
      // Gone because the lease expired (nothing else could delete them).
      expect(Number((await etcd.leaseClient.leaseTimeToLive({ ID: lease, keys: false })).TTL)).toBe(-1);
    } finally {
      cli.child.kill('SIGKILL');
    }
  });
});

describe('an etcd outage longer than the provider TTL', () => {
  it('re-puts the live providers\' records on a new lease when etcd returns', async () => {
    const etcdServer = await startPrivateEtcd();
    const { root, dir } = uniqueRoot();
    const c = await buildCoordinator({ etcd: [etcdServer.url], prefix: uniquePrefix('disco-outage'), dnsRoot: root, providerTtlMs: 2000, logLevel: 'silent', listen: { host: '127.0.0.1', port: 0 } });
    let back: Awaited<ReturnType<typeof startEtcd>> | undefined;
    const etcd = new Etcd3({ hosts: etcdServer.url });
    try {
      const base = await c.listen();
      const ws = await provide(base, 'service=survivor&port=1');
      const [before] = await eventually(async () => {
        const r = await records(etcd, dir);
        return r.length === 1 ? r : undefined;
      });
      await etcdServer.stop();
      // Down for well over the TTL: the lease expires (on restart etcd
      // revokes leases whose TTL ran out) and the coordinator notices.
      await new Promise((r) => setTimeout(r, 5000));
      back = await startEtcd({ dataDir: etcdServer.dataDir, clientPort: etcdServer.clientPort });
      const [after] = await eventually(async () => {
        const r = await records(etcd, dir).catch(() => []);
        return r.length === 1 && r[0].lease !== before.lease ? r : undefined;
      }, 15_000, 100);
      expect(after.key).toBe(before.key);
      expect(after.value).toBe(before.value);
      // The old lease is gone; the record is on a live one.
      const ttl = await etcd.leaseClient.leaseTimeToLive({ ID: after.lease, keys: false });
      expect(Number(ttl.TTL)).toBeGreaterThan(0);
      ws.close();
      await eventually(async () => ((await records(etcd, dir)).length === 0 ? true : undefined));
    } finally {
      await c.close();
      etcd.close();
      await back?.stop();
      await etcdServer.cleanup();
    }
  }, 40_000);
});

describe('the record writer', () => {
  const log = pino({ level: 'silent' });
  const value = '{"host":"10.0.0.1","port":1,"priority":1,"weight":100}';

  it('writes a burst of records, and of deletes, in one transaction where etcd allows it', async () => {
    // An etcd whose limits were raised (every other test runs on the defaults).
    const server = await startPrivateEtcd(undefined, ['--max-txn-ops', '100000', '--max-request-bytes', '33554432']);
    const etcd = new Etcd3({ hosts: server.url });
    const { dir } = uniqueRoot();
    const lease = new CoordinatorLease(etcd, 5, log);
    const writer = new RecordWriter(etcd, lease, log);
    try {
      const claims = Array.from({ length: 2000 }, (_, i) => writer.claim(`${dir}services/burst/r${i}`, value));
      await writer.settled();
      expect((await records(etcd, dir)).length).toBe(2000);
      expect(writer.stats).toMatchObject({ txns: 1, puts: 2000, failures: 0, conflicts: 0 });
      expect(claims.every((c) => c.held)).toBe(true);
      claims.forEach((c) => writer.release(c));
      await writer.settled();
      expect(await records(etcd, dir)).toEqual([]);
      expect(writer.stats).toMatchObject({ txns: 2, deletes: 2000, failures: 0 });
    } finally {
      writer.stop();
      await lease.stop();
      etcd.close();
      await server.cleanup();
    }
  });

  it('falls back to smaller transactions when etcd refuses a big one, and loses nothing', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'sy-etcd-'));
    // etcd's default --max-txn-ops, as every test's etcd has.
    const server = await startEtcd({ dataDir });
    const etcd = new Etcd3({ hosts: server.url });
    const lease = new CoordinatorLease(etcd, 5, log);
    const writer = new RecordWriter(etcd, lease, log, { retryMs: 60_000 });
    try {
      const claims = Array.from({ length: 1000 }, (_, i) => writer.claim(`/skydns/local/fallback/r${i}`, value));
      await writer.settled();
      expect((await records(etcd, '/skydns/local/fallback/')).length).toBe(1000);
      // One refusal, resent at once (not after retryMs) in transactions of
      // 127 records (each a nested transaction: 1 + 127 ops ≤ 128).
      expect(writer.stats).toMatchObject({ failures: 1, txns: 8, puts: 1000 });
      claims.forEach((c) => writer.release(c));
      await writer.settled();
      expect(await records(etcd, '/skydns/local/fallback/')).toEqual([]);
      // It remembered: no second refusal.
      expect(writer.stats).toMatchObject({ failures: 1, txns: 16, deletes: 1000 });
    } finally {
      writer.stop();
      await lease.stop();
      etcd.close();
      await server.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 30_000);
});
