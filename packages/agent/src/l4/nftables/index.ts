export * from './model.js';
export * from './observe.js';
export * from './plan.js';
export * from './executor.js';
