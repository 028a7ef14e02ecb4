/**
 * Shutdown steps of the long-running commands. SIGINT/SIGTERM run them once,
 * in reverse order of registration, then exit; a command that fails while
 * starting runs them too, so nothing it already started (an etcd child)
 * outlives it.
 */
const steps: (() => Promise<void> | void)[] = [];
let installed = false;
let running: Promise<void> | undefined;

/** Runs every registered step once, newest first; errors are reported, not thrown. */
export function runShutdown(): Promise<void> {
  running ??= (async () => {
    for (const s of [...steps].reverse()) {
      try {
        await s();
      } catch (e) {
        process.stderr.write(`switchyard: error while stopping: ${(e as Error).message}\n`);
      }
    }
  })();
  return running;
}

export function onShutdown(step: () => Promise<void> | void): void {
  steps.push(step);
  if (installed) return;
  installed = true;
  const onSignal = (signal: string) => {
    if (running) return;
    process.stderr.write(`switchyard: ${signal}, stopping\n`);
    void runShutdown().then(() => process.exit(0));
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
}
