/**
 * Polls `fn` until it returns something other than undefined/false, or fails
 * after `timeoutMs` — for conditions that become true asynchronously, instead
 * of sleeping a fixed time.
 */
export async function eventually<T>(fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 3000, stepMs = 25): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
