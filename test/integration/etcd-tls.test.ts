/**
 * TLS to etcd with client certificates: a CA, a server and a client
 * certificate made with openssl, an etcd of its own that serves only
 * https and wants a client certificate (--client-cert-auth). The coordinator
 * (the real CLI) and an agent connect with --etcd-ca/--etcd-cert/--etcd-key;
 * without them the start fails and says why.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPasswordFile } from '@switchyard/shared';
import { startAgent } from '../../packages/agent/src/index.js';
import { setupEtcdAuth } from '../../packages/cli/src/commands/etcd-auth.js';
import { buildCoordinator } from '../../packages/coordinator/src/index.js';
import { startEtcd, type EmbeddedEtcd } from '../../packages/cli/src/embedded-etcd.js';
import { runCli, startCli } from '../helpers/cli.js';
import { uniquePrefix } from '../helpers/etcd.js';

let dir: string;
let etcd: EmbeddedEtcd;
const prefix = uniquePrefix('etcd-tls');
const pem = (name: string) => join(dir, name);

/** A key and a certificate signed by the test CA (or self-signed: the CA itself). */
function issue(name: string, subject: string, ext: string): void {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', pem(`${name}.key`), '-out', pem(`${name}.csr`), '-subj', subject);
  writeFileSync(pem(`${name}.ext`), ext);
  openssl('x509', '-req', '-in', pem(`${name}.csr`), '-CA', pem('ca.crt'), '-CAkey', pem('ca.key'), '-CAcreateserial', '-out', pem(`${name}.crt`), '-days', '1', '-extfile', pem(`${name}.ext`));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sy-etcd-tls-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', pem('ca.key'), '-out', pem('ca.crt'), '-days', '1', '-subj', '/CN=switchyard-test-ca'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  issue('server', '/CN=etcd', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  issue('client', '/CN=switchyard', 'extendedKeyUsage=clientAuth\n');
  etcd = await startEtcd({ dataDir: join(dir, 'data'), tls: { certFile: pem('server.crt'), keyFile: pem('server.key'), trustedCaFile: pem('ca.crt') } });
});

afterAll(async () => {
  await etcd?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const tlsFlags = () => ['--etcd-ca', pem('ca.crt'), '--etcd-cert', pem('client.crt'), '--etcd-key', pem('client.key')];

describe('etcd over TLS with client certificates', () => {
  it('serves https only', () => {
    expect(etcd.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  });

  it('a coordinator connects with --etcd-ca/--etcd-cert/--etcd-key, and an agent applies what it stores', async () => {
    const run = startCli(['coordinator', '--etcd', etcd.url, ...tlsFlags(), '--prefix', prefix, '--listen', '127.0.0.1:0', '--log-level', 'warn'], /listening at (http:\/\/\S+)/);
    try {
      const api = /listening at (http:\/\/\S+)/.exec(await run.ready)![1];
      expect((await fetch(`${api}/healthz`)).status).toBe(200);
      const post = await fetch(`${api}/services`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ host: '10.3.0.1', port: 443 }) });
      expect(post.status, await post.clone().text()).toBe(200);
      const rev = Number(post.headers.get('x-switchyard-revision'));

      const agent = await startAgent({ hostId: 'tls1', etcd: [etcd.url], etcdCa: pem('ca.crt'), etcdCert: pem('client.crt'), etcdKey: pem('client.key'), prefix, dataplane: 'dry-run', logLevel: 'silent' });
      try {
        await expect.poll(() => agent.status.written?.appliedRevision ?? 0, { timeout: 10_000 }).toBeGreaterThanOrEqual(rev);
        expect(agent.status.written?.services).toBe(1);
      } finally {
        await agent.stop();
      }
    } finally {
      run.child.kill('SIGTERM');
    }
  });

  it('without the flags the coordinator does not start, and says which flags to check', async () => {
    const r = await runCli(['coordinator', '--etcd', etcd.url, '--prefix', prefix, '--listen', '127.0.0.1:0', '--log-level', 'silent']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/refused access .*certificate.*check --etcd-ca, --etcd-cert, --etcd-key/s);
  });

  it('with the CA but no client certificate etcd refuses the handshake; a missing file names its flag', async () => {
    await expect(buildCoordinator({ etcd: [etcd.url], etcdCa: pem('ca.crt'), prefix, logLevel: 'silent' })).rejects.toThrow(
      /refused access .*(bad certificate|certificate required).*check --etcd-ca, --etcd-cert, --etcd-key/s,
    );
    await expect(buildCoordinator({ etcd: [etcd.url], etcdCa: pem('nope.crt'), prefix, logLevel: 'silent' })).rejects.toThrow(/--etcd-ca: cannot read .*nope\.crt: ENOENT/);
    await expect(buildCoordinator({ etcd: [etcd.url], etcdCa: pem('ca.crt'), etcdCert: pem('client.crt'), prefix, logLevel: 'silent' })).rejects.toThrow(
      /--etcd-cert and --etcd-key go together/,
    );
  });

  // Last: it turns auth on in this etcd.
  it('etcd-auth works over TLS, and a coordinator then needs both its certificate and its user', async () => {
    const out = join(dir, 'auth');
    const tls = { credentials: { rootCertificate: readFileSync(pem('ca.crt')), certChain: readFileSync(pem('client.crt')), privateKey: readFileSync(pem('client.key')) } };
    const result = await setupEtcdAuth({ etcd: [etcd.url], hosts: ['tls1'], out, prefix, tls });
    expect(result.enabled).toBe(true);
    const tlsConfig = { etcd: [etcd.url], etcdCa: pem('ca.crt'), etcdCert: pem('client.crt'), etcdKey: pem('client.key'), prefix, logLevel: 'silent' as const };
    const c = await buildCoordinator({ ...tlsConfig, etcdUser: 'switchyard-coordinator', etcdPasswordFile: join(out, 'switchyard-coordinator.password') });
    try {
      const post = await c.app.inject({ method: 'POST', url: '/services', payload: { host: '10.3.0.2', port: 443 } });
      expect(post.statusCode, post.body).toBe(200);
    } finally {
      await c.close();
    }
    // The certificate alone makes it user "switchyard" (its CN) to etcd, which has no permission.
    await expect(buildCoordinator(tlsConfig)).rejects.toThrow(/refused access .*permission denied.*check --etcd-user, --etcd-password-file/);
    expect(readPasswordFile('root', join(out, 'root.password'))).toMatch(/^[\w-]{32}$/);
  });
});
