import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', '.switchyard/**', 'coverage/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', fetch: 'readonly', URL: 'readonly', URLSearchParams: 'readonly', NodeJS: 'readonly', AbortController: 'readonly', performance: 'readonly', setImmediate: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    // Dependencies run one way: the agent never imports the HTTP stack, the
    // coordinator never runs kernel commands, shared imports nothing of ours.
    files: ['packages/agent/src/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['fastify', '@fastify/*', '@switchyard/coordinator', 'ws'] }] },
  },
  {
    files: ['packages/coordinator/src/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['execa', '@switchyard/agent', 'node:child_process'] }] },
  },
  {
    files: ['packages/shared/src/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['@switchyard/*', 'fastify', 'execa'] }] },
  },
);
