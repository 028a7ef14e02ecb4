export { buildCoordinator, type Coordinator, type BuildDeps } from './app.js';
export { CoordinatorConfig, parseListen, type CoordinatorConfigInput } from './config.js';
export type { CoordinatorContext, Feature, WebSocketHandler } from './context.js';
export { REVISION_HEADER } from './http/revision.js';
