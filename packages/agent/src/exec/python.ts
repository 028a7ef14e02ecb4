/**
 * The python3 the agent's helpers run on (the netns helper, the spawn
 * helper): the distribution's own when there is one. Not whatever `python3`
 * PATH finds first: a version manager's shim (pyenv) is a shell script that
 * costs ~0.6 s per start, the distribution's python ~0.07 s.
 */
import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';

export type PythonInterpreter = '/usr/bin/python3' | 'python3';
export const PYTHON3: PythonInterpreter = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3';

/** Whether `interpreter` is there to run: a path that exists, or a bare name found on PATH. */
export function pythonAvailable(interpreter: string = PYTHON3): boolean {
  if (interpreter.includes('/')) return existsSync(interpreter);
  return (process.env.PATH ?? '').split(delimiter).some((dir) => dir && existsSync(join(dir, interpreter)));
}
