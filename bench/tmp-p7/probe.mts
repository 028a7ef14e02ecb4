import { startEtcd } from '../../packages/cli/src/embedded-etcd.ts';
import { createEtcdClient } from '../../packages/shared/src/index.ts';
const e = await startEtcd({ dataDir: '/tmp/p7/d' + Date.now() });
const c = createEtcdClient({ hosts: [e.url] });
c.members.on('member-down', (u) => console.log('down', u, Date.now()));
c.members.on('member-up', (u) => console.log('up', u));
c.members.on('leader', (u) => console.log('leader', u));
const m: any = c.members;
for (let i = 0; i < 10; i++) { await new Promise(r => setTimeout(r, 200)); console.log(m.members.map((x: any) => [x.up, x.id, x.leader])); }
try { await m.members[0].probe.maintenance.status({ deadline: Date.now() + 400 }).then(console.log) } catch (err) { console.log('err', err) }
c.close(); await e.stop();
