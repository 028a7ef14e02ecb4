/**
 * How a daemon proves who it is to etcd: TLS with a client certificate
 * (`--etcd-ca`, `--etcd-cert`, `--etcd-key`) and/or an etcd user
 * (`--etcd-user`, `--etcd-password-file`). One config fragment, spread into
 * the coordinator's and the agent's schemas, so both take the same flags.
 *
 * The files are read once, at start; a missing or unreadable file is a
 * startup error that names its flag (a daemon that starts and then cannot
 * talk to etcd would only look like an etcd outage).
 */
import { readFileSync } from 'node:fs';
import { NoopPolicy } from 'cockatiel';
import { Etcd3 } from 'etcd3';
import { z } from 'zod';

export const EtcdAccessConfig = z.object({
  etcdCa: z.string().min(1).optional().describe("PEM CA certificate(s) that signed the etcd members' certificates (TLS to etcd)"),
  etcdCert: z.string().min(1).optional().describe('PEM client certificate to present to etcd (with --etcd-key)'),
  etcdKey: z.string().min(1).optional().describe('PEM private key of --etcd-cert'),
  etcdUser: z.string().min(1).optional().describe('etcd user to authenticate as (with --etcd-password-file)'),
  etcdPasswordFile: z.string().min(1).optional().describe('file holding the password of --etcd-user (one line)'),
});
export type EtcdAccessConfig = z.output<typeof EtcdAccessConfig>;

/** What etcd3 takes: its `credentials` and `auth` options. */
export interface EtcdAccess {
  credentials?: { rootCertificate: Buffer; privateKey?: Buffer; certChain?: Buffer };
  auth?: { username: string; password: string };
}

/** A startup error about one of the etcd access flags. */
export class EtcdAccessError extends Error {
  override readonly name = 'EtcdAccessError';
}

function readFlagFile(flag: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new EtcdAccessError(`${flag}: cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** A password file's content: its first line, without the line end. */
export function readPasswordFile(flag: string, path: string): string {
  const password = readFlagFile(flag, path).toString('utf8').split(/\r?\n/)[0];
  if (!password) throw new EtcdAccessError(`${flag}: ${path} is empty`);
  return password;
}

/** Reads the files the flags name; throws EtcdAccessError naming the flag at fault. */
export function loadEtcdAccess(c: EtcdAccessConfig): EtcdAccess {
  const access: EtcdAccess = {};
  if ((c.etcdCert === undefined) !== (c.etcdKey === undefined)) throw new EtcdAccessError('--etcd-cert and --etcd-key go together');
  if ((c.etcdUser === undefined) !== (c.etcdPasswordFile === undefined)) throw new EtcdAccessError('--etcd-user and --etcd-password-file go together');
  if (c.etcdCa !== undefined || c.etcdCert !== undefined) {
    access.credentials = {
      // Without --etcd-ca, gRPC checks the members' certificates against the system's roots.
      rootCertificate: (c.etcdCa !== undefined ? readFlagFile('--etcd-ca', c.etcdCa) : null) as Buffer,
      ...(c.etcdCert !== undefined && c.etcdKey !== undefined
        ? { certChain: readFlagFile('--etcd-cert', c.etcdCert), privateKey: readFlagFile('--etcd-key', c.etcdKey) }
        : {}),
    };
  }
  if (c.etcdUser !== undefined && c.etcdPasswordFile !== undefined) {
    access.auth = { username: c.etcdUser, password: readPasswordFile('--etcd-password-file', c.etcdPasswordFile) };
  }
  return access;
}

/**
 * etcd said no to who we are (bad password, no user while auth is on, a
 * permission missing) or the TLS handshake failed: retrying will not help.
 */
const accessRefusedPattern =
  /authentication failed|invalid user ID or password|user name is empty|user name not found|permission denied|certificate|SSL|TLS|handshake|self[- ]signed|unable to (get|verify)/i;

export function isAccessRefused(e: unknown): boolean {
  return accessRefusedPattern.test(String((e as Error)?.message ?? e));
}

/** Access is configured, or the endpoints want TLS: worth checking at start. */
export function wantsAccessCheck(hosts: string[], access: EtcdAccess): boolean {
  return Boolean(access.auth || access.credentials || hosts.some((h) => h.startsWith('https://')));
}

/**
 * One read of `key` as this principal, at start, on a client of its own (the
 * main client's member probes would report a refused handshake only as "did
 * not answer"). Refused — bad password, no user while etcd has auth on, no
 * permission, a TLS handshake etcd or we reject — throws EtcdAccessError
 * with etcd's words and the flags to look at. Anything else (etcd away, slow)
 * resolves: a daemon starts while etcd is down and catches up later.
 */
export async function checkEtcdAccess(hosts: string[], access: EtcdAccess, key: string, timeoutMs = 3000): Promise<void> {
  const client = new Etcd3({
    hosts,
    ...access,
    dialTimeout: timeoutMs,
    faultHandling: { host: () => new NoopPolicy(), global: new NoopPolicy() },
    defaultCallOptions: () => ({ deadline: Date.now() + timeoutMs }),
  });
  try {
    await client.get(key).exists();
  } catch (e) {
    if (!isAccessRefused(e)) return;
    const msg = String((e as Error)?.message ?? e);
    const flags = /certificate|SSL|TLS|handshake|self[- ]signed|unable to (get|verify)/i.test(msg) ? '--etcd-ca, --etcd-cert, --etcd-key' : '--etcd-user, --etcd-password-file';
    throw new EtcdAccessError(`etcd at ${hosts.join(',')} refused access (${msg}); check ${flags}`, { cause: e });
  } finally {
    client.close();
  }
}
