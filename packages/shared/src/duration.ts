/**
 * Durations as every flag accepts them: `500ms`, `5s`, `30m`, `2h`, or bare
 * seconds (`30`, `0.5`). Returns milliseconds.
 */
const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDuration(text: string | number): number {
  if (typeof text === 'number') {
    if (!Number.isFinite(text) || text < 0) throw new Error(`invalid duration: ${text}`);
    return Math.round(text * 1000);
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!m) throw new Error(`invalid duration "${text}" (use e.g. 500ms, 5s, 30m or bare seconds)`);
  return Math.round(Number(m[1]) * units[m[2] ?? 's']);
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
