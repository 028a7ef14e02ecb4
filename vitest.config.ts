import { defineConfig } from 'vitest/config';

// Layers, each its own project so the fast one runs in a second:
//   unit        pure logic and fakes, no etcd, no kernel
//   integration real etcd (started by the global setup), HTTP via inject() and real sockets
//   kernel      real etcd + real kernel in network namespaces the tests create (root)
//   vm          real IPVS in a qemu guest (skips outside CI when the tools are missing)
//   faults      real multi-member etcd clusters the tests start, freeze and kill (one file at a time: timing)
export default defineConfig({
  // Tests run the TypeScript sources of the workspace packages directly (the
  // "source" export condition), so no build is needed between edit and test.
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source'] } },
  test: {
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/global-setup.ts'],
          testTimeout: 30_000,
          hookTimeout: 60_000,
        },
      },
      {
        extends: true,
        test: {
          name: 'kernel',
          include: ['test/kernel/**/*.test.ts'],
          globalSetup: ['test/global-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'faults',
          include: ['test/faults/**/*.test.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
          fileParallelism: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'vm',
          include: ['test/vm/**/*.test.ts'],
          testTimeout: 900_000,
          hookTimeout: 900_000,
        },
      },
    ],
  },
});
