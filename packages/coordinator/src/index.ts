export { buildCoordinator, type Coordinator, type Feature, type WebSocketHandler, type BuildDeps } from './app.js';
export { CoordinatorConfig, parseListen, type CoordinatorConfigInput } from './config.js';
export type { CoordinatorContext } from './context.js';
export { REVISION_HEADER } from './http/revision.js';
