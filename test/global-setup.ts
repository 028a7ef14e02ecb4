import type { TestProject } from 'vitest/node';
import { startPrivateEtcd } from './helpers/etcd.js';

export default async function setup(project: TestProject) {
  const etcd = await startPrivateEtcd();
  project.provide('etcdUrl', etcd.url);
  return async () => {
    await etcd.cleanup();
  };
}
