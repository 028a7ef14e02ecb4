/** Python's json error messages, which Django REST framework's JSONParser reports ("JSON parse error - …"). */
import { expect, it } from 'vitest';
import { pythonJsonError } from '../../packages/coordinator/src/portmaster/drf.js';

it.each([
  ['', 'Expecting value: line 1 column 1 (char 0)'],
  ['  ', 'Expecting value: line 1 column 3 (char 2)'],
  ['{', 'Expecting property name enclosed in double quotes: line 1 column 2 (char 1)'],
  ['{"a":1,}', 'Expecting property name enclosed in double quotes: line 1 column 8 (char 7)'],
  ["{'a': 1}", 'Expecting property name enclosed in double quotes: line 1 column 2 (char 1)'],
  ['[1,]', 'Expecting value: line 1 column 4 (char 3)'],
  ['[1 2]', "Expecting ',' delimiter: line 1 column 4 (char 3)"],
  ['{"a":\n  -}', 'Expecting value: line 2 column 3 (char 8)'],
  ['"\\x"', 'Invalid \\escape: line 1 column 2 (char 1)'],
  ['"a\nb"', 'Invalid control character at: line 1 column 3 (char 2)'],
  ['[1] x', 'Extra data: line 1 column 5 (char 4)'],
  ['[Infinity]', "Out of range float values are not JSON compliant: 'Infinity'"],
])('%j → %s', (text, message) => {
  expect(pythonJsonError(text)).toBe(message);
});
