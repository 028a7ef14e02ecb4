/**
 * replacePrefix's operations, without etcd: byte order, the gaps it deletes,
 * the gaps it may skip when told what is stored, and the key just after each
 * wanted key (so no delete touches a put).
 */
import { describe, expect, it } from 'vitest';
import type { IRequestOp } from 'etcd3';
import { prefixEnd, replacePrefix } from '@switchyard/shared';

/** Ops as readable strings: `put k`, `del [a, b)` (a NUL shown as \0). */
function show(ops: IRequestOp[]): string[] {
  const s = (b: Buffer | undefined) => (b ?? Buffer.alloc(0)).toString('latin1').replace(/\0/g, '\\0');
  return ops.map((o) => (o.request_put ? `put ${s(o.request_put.key)}` : `del [${s(o.request_delete_range?.key)}, ${s(o.request_delete_range?.range_end)})`));
}

const end = prefixEnd('/p/').toString('latin1');

describe('replacePrefix', () => {
  it('deletes every gap when it does not know what is stored', () => {
    expect(show(replacePrefix('/p/', [['/p/b', '1'], ['/p/a', '2']]))).toEqual([
      'del [/p/, /p/a)',
      'put /p/a',
      'del [/p/a\\0, /p/b)',
      'put /p/b',
      `del [/p/b\\0, ${end})`,
    ]);
    expect(show(replacePrefix('/p/', []))).toEqual([`del [/p/, ${end})`]);
  });

  it('skips gaps that hold none of the stored keys, and keeps the ones that do', () => {
    const ops = replacePrefix('/p/', [['/p/b', '1'], ['/p/d', '2']], ['/p/b', '/p/c', '/p/e']);
    expect(show(ops)).toEqual(['put /p/b', 'del [/p/b\\0, /p/d)', 'put /p/d', `del [/p/d\\0, ${end})`]);
    expect(replacePrefix('/p/', [['/p/a', '1']], ['/p/a'])).toHaveLength(1);
    expect(replacePrefix('/p/', [], [])).toEqual([]);
  });

  it('orders by bytes, as etcd does, not by UTF-16 code units', () => {
    // U+FF21 (3 bytes in UTF-8, EF BC A1) sorts before U+1F600 (F0 …) in bytes,
    // but after it in UTF-16 (D83D …).
    const ops = show(replacePrefix('/p/', [['/p/\u{1F600}', '1'], ['/p/\uFF21', '2']]));
    expect(ops.filter((o) => o.startsWith('put'))).toEqual([`put ${Buffer.from('/p/\uFF21').toString('latin1')}`, `put ${Buffer.from('/p/\u{1F600}').toString('latin1')}`]);
    expect(ops).toHaveLength(5);
  });

  it('refuses a key outside the prefix', () => {
    expect(() => replacePrefix('/a/', [['/b/x', '1']])).toThrow(/not under/);
  });
});
