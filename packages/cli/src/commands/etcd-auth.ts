/**
 * `switchyard etcd-auth`: turns etcd's authentication on with one user and
 * role per part of Switchyard —
 *
 *   root                          etcd's administrator (this command only);
 *   switchyard-coordinator        read/write the whole prefix and /skydns/;
 *   switchyard-agent-<host>       what one host's agent needs, nothing more.
 *
 * The roles' permissions come from the key layout (keyspace().access), so
 * they follow it. Each password is written to `<out>/<user>.password` (mode
 * 0600) for the daemon's `--etcd-password-file`. Run again (root's password
 * is read from `<out>/root.password` or `--root-password-file`) it adds the
 * hosts it is given, keeps every password that has a file, and brings each
 * role's permissions back to what the layout says.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  createEtcdClient,
  DEFAULT_ETCD_ENDPOINTS,
  DEFAULT_PREFIX,
  EtcdAccessConfig,
  isSafeName,
  keyspace,
  loadEtcdAccess,
  parseEtcdHosts,
  prefixEnd,
  readPasswordFile,
  type EtcdAccess,
  type EtcdClient,
  type KeyRange,
  type RoleAccess,
} from '@switchyard/shared';
import { flagsFromSchema, helpText, parseFlags, UsageError, type FlagSpec } from '../flags.js';

export const COORDINATOR_USER = 'switchyard-coordinator';
export const agentUser = (hostId: string) => `switchyard-agent-${hostId}`;

export const etcdAuthFlags: FlagSpec[] = [
  { name: 'etcd', kind: 'list', default: DEFAULT_ETCD_ENDPOINTS.join(','), help: 'etcd endpoints, comma-separated' },
  { name: 'hosts', kind: 'list', help: 'host ids to make an agent user for, comma-separated' },
  { name: 'out', kind: 'string', help: 'directory the password files are written to (created, mode 0700)' },
  { name: 'root-password-file', kind: 'string', help: "root's password (default: <out>/root.password, generated on the first run)" },
  { name: 'prefix', kind: 'string', default: DEFAULT_PREFIX, help: 'etcd key prefix the roles cover' },
  // TLS to etcd, as the daemons take it; the user is always root here.
  ...flagsFromSchema(EtcdAccessConfig.pick({ etcdCa: true, etcdCert: true, etcdKey: true })),
];

const newPassword = () => randomBytes(24).toString('base64url');

function writeSecret(path: string, password: string): void {
  writeFileSync(path, `${password}\n`, { mode: 0o600 });
  chmodSync(path, 0o600); // the mode above applies only to a new file
}

/** A password kept in `<out>/<user>.password`: read when there, else made and written. */
function passwordFor(out: string, user: string): { password: string; made: boolean } {
  const file = join(out, `${user}.password`);
  if (existsSync(file)) return { password: readPasswordFile(`password of ${user}`, file), made: false };
  const password = newPassword();
  writeSecret(file, password);
  return { password, made: true };
}

const authRequired = /user name is empty|permission denied|invalid auth token/i;

/** etcd answers a user-management call without a user: its auth is off. */
async function authIsOn(etcd: EtcdClient): Promise<boolean> {
  try {
    await etcd.auth.roleList({});
    return false;
  } catch (e) {
    if (authRequired.test(String((e as Error).message))) return true;
    throw e;
  }
}

function rangeOf(r: KeyRange): { key: Buffer; range_end: Buffer } {
  return 'prefix' in r ? { key: Buffer.from(r.prefix), range_end: prefixEnd(r.prefix) } : { key: Buffer.from(r.key), range_end: Buffer.alloc(0) };
}

type Grant = { permType: 'Read' | 'Readwrite'; key: Buffer; range_end: Buffer };
const grantId = (g: { permType: string; key: Buffer; range_end: Buffer }) => `${g.permType} ${g.key.toString('hex')} ${g.range_end.toString('hex')}`;

/** The role exists and holds exactly `access`'s permissions. */
async function ensureRole(etcd: EtcdClient, name: string, access: RoleAccess, roles: Set<string>): Promise<void> {
  if (!roles.has(name)) await etcd.auth.roleAdd({ name });
  const want: Grant[] = [
    ...access.read.map((r) => ({ permType: 'Read' as const, ...rangeOf(r) })),
    ...access.readwrite.map((r) => ({ permType: 'Readwrite' as const, ...rangeOf(r) })),
  ];
  const have = roles.has(name) ? (await etcd.auth.roleGet({ role: name })).perm : [];
  const wanted = new Set(want.map(grantId));
  const had = new Set(have.map((p) => grantId({ ...p, permType: String(p.permType) })));
  for (const p of have) {
    if (!wanted.has(grantId({ ...p, permType: String(p.permType) }))) await etcd.auth.roleRevokePermission({ role: name, key: p.key, range_end: p.range_end });
  }
  for (const g of want) if (!had.has(grantId(g))) await etcd.auth.roleGrantPermission({ name, perm: g });
}

/**
 * The user exists and holds its role; a new password (its file was not
 * there) is set. An existing user's password is left alone: every auth
 * change bumps etcd's auth revision, which running clients then meet.
 */
async function ensureUser(etcd: EtcdClient, name: string, pw: { password: string; made: boolean }, role: string, users: Set<string>): Promise<void> {
  const { password } = pw;
  if (!users.has(name)) await etcd.auth.userAdd({ name, password });
  else if (pw.made) await etcd.auth.userChangePassword({ name, password });
  const roles = users.has(name) ? (await etcd.auth.userGet({ name })).roles : [];
  if (!roles.includes(role)) await etcd.auth.userGrantRole({ user: name, role });
}

export interface EtcdAuthResult {
  /** Users made or updated, with their password files. */
  users: { user: string; file: string; made: boolean }[];
  /** Auth was off before this run. */
  enabled: boolean;
}

export async function setupEtcdAuth(opts: { etcd: string[]; hosts: string[]; out: string; rootPasswordFile?: string; prefix: string; tls: EtcdAccess }): Promise<EtcdAuthResult> {
  const keys = keyspace(opts.prefix);
  mkdirSync(opts.out, { recursive: true, mode: 0o700 });
  const rootFile = opts.rootPasswordFile ?? join(opts.out, 'root.password');
  const root = opts.rootPasswordFile ? { password: readPasswordFile('--root-password-file', opts.rootPasswordFile), made: false } : passwordFor(opts.out, 'root');

  let etcd = createEtcdClient({ hosts: opts.etcd, access: opts.tls });
  try {
    const wasOn = await authIsOn(etcd);
    if (wasOn) {
      etcd.close();
      etcd = createEtcdClient({ hosts: opts.etcd, access: { ...opts.tls, auth: { username: 'root', password: root.password } } });
    }
    const users = new Set((await etcd.auth.userList({})).users);
    const roles = new Set((await etcd.auth.roleList({})).roles);
    const result: EtcdAuthResult = { users: [{ user: 'root', file: rootFile, made: root.made }], enabled: !wasOn };

    // etcd enables auth only when a user "root" holds the role "root".
    if (!roles.has('root')) await etcd.auth.roleAdd({ name: 'root' });
    if (!wasOn) await ensureUser(etcd, 'root', { ...root, made: true }, 'root', users);

    await ensureRole(etcd, COORDINATOR_USER, keys.access.coordinator(), roles);
    const c = passwordFor(opts.out, COORDINATOR_USER);
    await ensureUser(etcd, COORDINATOR_USER, c, COORDINATOR_USER, users);
    result.users.push({ user: COORDINATOR_USER, file: join(opts.out, `${COORDINATOR_USER}.password`), made: c.made });

    for (const host of opts.hosts) {
      const user = agentUser(host);
      await ensureRole(etcd, user, keys.access.agent(host), roles);
      const a = passwordFor(opts.out, user);
      await ensureUser(etcd, user, a, user, users);
      result.users.push({ user, file: join(opts.out, `${user}.password`), made: a.made });
    }
    if (!wasOn) await etcd.auth.authEnable({});
    return result;
  } finally {
    etcd.close();
  }
}

export async function etcdAuthCommand(argv: string[]): Promise<void> {
  const { values, help } = parseFlags(argv, etcdAuthFlags);
  if (help) {
    process.stdout.write(
      helpText(
        'switchyard etcd-auth --etcd URL --hosts h1,h2 --out DIR [flags]',
        "Create etcd's root user, a coordinator user and one user per host's agent, each with a role that allows what it needs, and turn etcd's authentication on. Run again to add hosts.",
        etcdAuthFlags,
      ),
    );
    return;
  }
  const hosts = (values.hosts as string[] | undefined) ?? [];
  if (hosts.length === 0) throw new UsageError('--hosts is required (the host ids of the agents, comma-separated)');
  for (const h of hosts) if (!isSafeName(h, 63)) throw new UsageError(`--hosts: "${h}" is not a host id (letters, digits, "_", "." and "-", at most 63)`);
  if (!values.out) throw new UsageError('--out is required (the directory for the password files)');
  const result = await setupEtcdAuth({
    etcd: parseEtcdHosts(values.etcd as string[]),
    hosts,
    out: String(values.out),
    ...(values['root-password-file'] ? { rootPasswordFile: String(values['root-password-file']) } : {}),
    prefix: String(values.prefix),
    tls: loadEtcdAccess({ etcdCa: values['etcd-ca'] as string | undefined, etcdCert: values['etcd-cert'] as string | undefined, etcdKey: values['etcd-key'] as string | undefined }),
  });
  for (const u of result.users) process.stdout.write(`${u.user.padEnd(40)} ${u.file}${u.made ? ' (new password)' : ''}\n`);
  process.stdout.write(result.enabled ? 'etcd authentication enabled\n' : 'etcd authentication was already on; users and roles updated\n');
}
