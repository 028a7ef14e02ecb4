/**
 * Names that end up as kernel object names (interfaces, namespaces, nft
 * tables) or in command arguments. They are validated here, once, before any
 * command runs; user strings never reach a shell (every command is an argv
 * array), but a name must still be one the kernel accepts and one that cannot
 * be mistaken for an option or a path.
 */

/** Linux IFNAMSIZ is 16 including the NUL: 15 usable characters. */
export const MAX_IFNAME = 15;

const SAFE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** A safe token: starts alphanumeric, then alphanumerics, `_`, `.`, `-`. */
export function isSafeName(name: string, maxLength = 64): boolean {
  return name.length > 0 && name.length <= maxLength && SAFE.test(name) && name !== '.' && name !== '..';
}

export function isInterfaceName(name: string): boolean {
  return isSafeName(name, MAX_IFNAME) && !name.includes('/');
}
