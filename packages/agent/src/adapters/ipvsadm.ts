/**
 * The `ipvsadm` adapter: the only module that runs `ipvsadm`. Rules are
 * read with `-Sn` (the restore format), thresholds and connection counts
 * with `-Ln`, and changes go in ONE `ipvsadm -R` batch. With a namespace,
 * every call goes through the runner's `ip netns exec` (ipvsadm has no `-n`).
 */
import type { Runner } from '../exec/runner.js';

export class Ipvsadm {
  constructor(
    private readonly runner: Runner,
    private readonly netns?: string,
  ) {}

  private run(args: string[], opts: { input?: string; allowFail?: boolean } = {}) {
    return this.runner.run('ipvsadm', args, { ...opts, ...(this.netns ? { netns: this.netns } : {}) });
  }

  /** True when this kernel has IPVS (`ipvsadm -Ln` answers). */
  async available(): Promise<boolean> {
    const res = await this.run(['-Ln'], { allowFail: true }).catch(() => undefined);
    return res !== undefined && res.exitCode === 0;
  }

  /** Every rule, as `ipvsadm -Sn` prints it. */
  async save(): Promise<string> {
    return (await this.run(['-Sn'])).stdout;
  }

  /** `ipvsadm -Ln --thresholds`. */
  async listThresholds(): Promise<string> {
    return (await this.run(['-Ln', '--thresholds'])).stdout;
  }

  /** `ipvsadm -Ln` (active and inactive connections per destination). */
  async list(): Promise<string> {
    return (await this.run(['-Ln'])).stdout;
  }

  /**
   * Applies restore-format lines in one `ipvsadm -R`. It goes on past a
   * failing line and exits 0 unless the last line failed: its stderr is the
   * only sign of a rule the kernel refused, so any stderr is an error.
   */
  async restore(lines: string[]): Promise<void> {
    if (lines.length === 0) return;
    const res = await this.run(['-R'], { input: `${lines.join('\n')}\n` });
    if (res.stderr.trim() !== '') throw new Error(`ipvsadm -R refused part of the batch: ${res.stderr.trim()}`);
  }
}
