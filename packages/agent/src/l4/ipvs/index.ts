/**
 * The ipvs dataplane's pure parts, usable without etcd or the daemon.
 *
 * How to drive it by hand (this is what the VM test's guest script does):
 *
 *   import { ExecaRunner, ipvs } from '@switchyard/agent';   // or packages/agent/src/l4/ipvs/index.ts
 *   const { desiredVirtuals, IpvsExecutor, planIpvs, parseIpvsRules, renderIpvsRules } = ipvs;
 *
 *   const services: Service[] = [...];                 // shared schema `Service` (parse with Service.parse)
 *   const { virtuals, reports } = desiredVirtuals(services);  // what the kernel should hold (+ warnings)
 *   const exec = new IpvsExecutor(new ExecaRunner(), { device: 'sy-ipvs0' }  // netns: 'name' to confine it);
 *   let owned = new Set<string>();                      // keys of services this caller created
 *   const observed = await exec.observe();              // ipvsadm -Sn + addresses on the device
 *   const plan = planIpvs({ desired: virtuals, observed: observed.virtuals, observedAddresses: observed.addresses, owned });
 *   await exec.apply(plan.ops);                         // ip addr (dummy device) + one ipvsadm -R
 *   owned = plan.owned;
 *   // read back: parseIpvsRules((await runner.run('ipvsadm', ['-Sn'])).stdout) should equal `virtuals`
 *   // (compare sorted by virtualKey; renderIpvsRules(virtuals) prints the expected -Sn text).
 *
 * The kernel needs `ip_vs` and the scheduler modules loaded, and the dummy
 * module for the service-address device. Deleting a server drains it: pass
 * `draining` (from the previous plan) and `connections` (`exec.connections()`)
 * back in until the plan removes it.
 */
export * from './model.js';
export * from './parse.js';
export * from './plan.js';
export * from './executor.js';
