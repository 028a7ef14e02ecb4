/**
 * The taken/free state of one port range, answering "lowest free port"
 * without walking the range.
 *
 * Two levels of bits: `words` has one bit per port (1 = taken), `full` one
 * bit per word of `words` (1 = all 32 ports of that word taken). The lowest
 * free port is the first zero bit of `full`, then the first zero bit of that
 * word: at most ⌈range/1024⌉ summary words are read (47 for the largest
 * allowed range of 48,128 ports), whatever is taken. Bits past the end of the
 * range are set once, so they never look free.
 */
export class PortSet {
  readonly start: number;
  readonly end: number;
  private readonly words: Uint32Array;
  private readonly full: Uint32Array;
  private taken = 0;

  constructor(start: number, end: number) {
    if (!Number.isInteger(start) || !Number.isInteger(end) || end < start) throw new RangeError(`invalid port range ${start}-${end}`);
    this.start = start;
    this.end = end;
    const size = end - start + 1;
    this.words = new Uint32Array(Math.ceil(size / 32));
    this.full = new Uint32Array(Math.ceil(this.words.length / 32));
    const tailBits = size % 32;
    if (tailBits !== 0) this.words[this.words.length - 1] = ~((1 << tailBits) - 1) >>> 0;
    const tailWords = this.words.length % 32;
    if (tailWords !== 0) this.full[this.full.length - 1] = ~((1 << tailWords) - 1) >>> 0;
  }

  get size(): number {
    return this.end - this.start + 1;
  }

  /** How many ports of the range are taken. */
  get count(): number {
    return this.taken;
  }

  has(port: number): boolean {
    if (!this.contains(port)) return false;
    const i = port - this.start;
    return (this.words[i >>> 5] & (1 << (i & 31))) !== 0;
  }

  contains(port: number): boolean {
    return Number.isInteger(port) && port >= this.start && port <= this.end;
  }

  /** Marks `port` taken; false if it was already taken or is outside the range. */
  take(port: number): boolean {
    if (!this.contains(port) || this.has(port)) return false;
    const i = port - this.start;
    const w = i >>> 5;
    this.words[w] = (this.words[w] | (1 << (i & 31))) >>> 0;
    if (this.words[w] === 0xffffffff) this.full[w >>> 5] = (this.full[w >>> 5] | (1 << (w & 31))) >>> 0;
    this.taken++;
    return true;
  }

  /** Marks `port` free; false if it was already free or is outside the range. */
  free(port: number): boolean {
    if (!this.has(port)) return false;
    const i = port - this.start;
    const w = i >>> 5;
    this.words[w] = (this.words[w] & ~(1 << (i & 31))) >>> 0;
    this.full[w >>> 5] = (this.full[w >>> 5] & ~(1 << (w & 31))) >>> 0;
    this.taken--;
    return true;
  }

  /** The lowest free port, or undefined when every port is taken. */
  lowestFree(): number | undefined {
    for (let s = 0; s < this.full.length; s++) {
      if (this.full[s] === 0xffffffff) continue;
      const w = s * 32 + lowestZero(this.full[s]);
      return this.start + w * 32 + lowestZero(this.words[w]);
    }
    return undefined;
  }
}

/** Index of the lowest zero bit of a 32-bit word that is not all ones. */
function lowestZero(word: number): number {
  const inv = ~word >>> 0;
  return 31 - Math.clz32(inv & -inv);
}
