/** The README's configuration tables document every flag the CLI has. */
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
import { agentFlags } from '../../packages/cli/src/commands/agent.js';
import { coordinatorFlags } from '../../packages/cli/src/commands/coordinator.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

it.each([...coordinatorFlags.map((f) => ['coordinator', f.name]), ...agentFlags.map((f) => ['agent', f.name])])('%s --%s is documented', (_cmd, name) => {
  expect(readme).toContain(`\`--${name}\``);
});

it('keeps the two-command quick start', () => {
  expect(readme).toMatch(/npm start[^\n]*\nnpm test/);
});
