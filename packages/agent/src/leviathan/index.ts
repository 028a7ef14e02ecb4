export { startTopology, type RunningTopology, type TopologyOptions } from './reconciler.js';
export { desiredFor, emptyObserved, vxlanOverhead, type CinJoin, type DesiredTopology, type ObservedTopology, type TopologyOp, type TopologyInput } from './model.js';
export { plan, applyOps, type PlanContext } from './plan.js';
export { commandsFor, execute, DELETE_GROUP, isolationRules, natRules, parseIsolation, parseJoins, parseNat, proxyArpArgs, NAT_TABLE, ISOLATION_TABLE, type Command, type ExecMode } from './execute.js';
export { observeTopology, findUnderlay, type NamespaceReader, type Underlay } from './observe.js';
export { TopologyRole } from './role.js';
