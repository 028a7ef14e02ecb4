/** SIGINT/SIGTERM run the registered shutdown steps once, in reverse order, then exit. */
const steps: (() => Promise<void> | void)[] = [];
let installed = false;
let stopping = false;

export function onShutdown(step: () => Promise<void> | void): void {
  steps.push(step);
  if (installed) return;
  installed = true;
  const run = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`switchyard: ${signal}, stopping\n`);
    for (const s of [...steps].reverse()) {
      try {
        await s();
      } catch (e) {
        process.stderr.write(`switchyard: error while stopping: ${(e as Error).message}\n`);
      }
    }
    process.exit(0);
  };
  process.on('SIGINT', () => void run('SIGINT'));
  process.on('SIGTERM', () => void run('SIGTERM'));
}
