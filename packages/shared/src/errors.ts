/**
 * The one error registry. Every error a client can see has a stable code, an
 * HTTP status and a default message. Handlers throw `SwitchyardError`; the
 * coordinator's error handler turns it into `{"error": message, "code": code}`.
 *
 * Where an upstream tool (Portal, Portmaster, Leviathan) had a message for the
 * same condition, the message is kept word for word so existing clients that
 * match on it keep working.
 */
export const errorRegistry = {
  // generic request problems
  BAD_JSON: { status: 400, message: 'Body is not valid JSON' },
  INVALID: { status: 400, message: 'Invalid request' },
  UNAUTHORIZED: { status: 401, message: 'Unauthorized' },
  NOT_FOUND: { status: 404, message: 'Not Found' },
  CONFLICT: { status: 409, message: 'Conflict' },
  BODY_TOO_LARGE: { status: 413, message: 'Body is too large' },
  TOO_LARGE: { status: 413, message: 'Too large for one etcd request' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Unsupported media type' },
  /** The request was not applied: etcd was not answering (refused before it was sent, or refused by etcd before proposing it). */
  ETCD_UNAVAILABLE: { status: 503, message: 'etcd is unavailable; the request was not applied' },
  /** A write was sent and no answer came in time: it may have been applied. Every write route is safe to repeat (README "Failures"). */
  OUTCOME_UNKNOWN: { status: 504, message: 'etcd did not answer in time; the write may have been applied. Repeating the same request is safe' },
  INTERNAL: { status: 500, message: 'Internal error' },

  // L4 (Portal)
  SERVICE_NOT_FOUND: { status: 404, message: 'No Service Found' },
  SERVER_NOT_FOUND: { status: 404, message: 'No Server Found' },
  SERVICE_EXISTS: { status: 409, message: 'A service with that id already exists' },
  HOST_NOT_FOUND: { status: 404, message: 'No Host Found' },

  // port allocation (Portmaster). Its routes answer in Django REST framework's
  // shapes (`{"<field>": [message]}`, `{"detail": message}`), with its words.
  PM_INVALID: { status: 400, message: 'Invalid input.' },
  PM_BAD_NAME: { status: 400, message: 'Use 1–64 characters of A–Z, a–z, 0–9, "_", "." or "-", starting with a letter or digit.' },
  PM_RENAME: { status: 400, message: 'A service cannot be renamed; create the new name and delete the old one.' },
  PM_SERVICE_NOT_FOUND: { status: 404, message: 'Not found.' },
  PM_SERVICE_EXISTS: { status: 400, message: 'service with this name already exists.' },
  PM_RESERVED_RANGE: { status: 400, message: 'Port range is in reserved range.' },
  PM_START_LOWER: { status: 400, message: 'Start of the range should be a lower number.' },
  PM_OVERLAP: { status: 400, message: 'Port range overlaps with existing services.' },
  PM_EXHAUSTED: { status: 400, message: 'Port range has been completely utilized.' },
  PM_OFFER_NAME_EXISTS: { status: 400, message: 'The fields service, name must make a unique set.' },
  PM_NAME_EXISTS: { status: 400, message: 'Service instance with this name already exists.' },
  PM_RANGE_IN_USE: { status: 400, message: 'Defined service instances fall outside of the range.' },
  PM_OFFER_NOT_FOUND: { status: 404, message: 'Not found.' },
  PM_PORT_NOT_FOUND: { status: 404, message: 'Not found.' },
  PM_METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed.' },
  PM_BAD_JSON: { status: 400, message: 'JSON parse error' },
  PM_BUSY: { status: 409, message: 'Too many concurrent offers raced for this range; try again.' },

  // container networks (Leviathan)
  CEN_NOT_FOUND: { status: 404, message: 'CEN not found' },
  CIN_NOT_FOUND: { status: 404, message: 'CIN not found' },
  CONTAINER_NOT_FOUND: { status: 404, message: 'Container not found' },
  BAD_NAME: { status: 400, message: 'Name cannot become a safe interface or namespace name' },
  POOL_EXHAUSTED: { status: 409, message: 'Address pool exhausted' },
  CONTAINER_ELSEWHERE: { status: 409, message: 'Container is on another host' },
  CEN_WIRING: { status: 400, message: 'A "wire" CEN joins exactly two containers' },

  // dashboard
  UI_NOT_BUILT: { status: 503, message: 'The dashboard was not built' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof errorRegistry;

export class SwitchyardError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  constructor(code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? errorRegistry[code].message, options);
    this.name = 'SwitchyardError';
    this.code = code;
    this.status = errorRegistry[code].status;
  }
}

/** Shorthand: `throw fail('SERVICE_NOT_FOUND')`. */
export function fail(code: ErrorCode, message?: string): SwitchyardError {
  return new SwitchyardError(code, message);
}

export function isSwitchyardError(e: unknown): e is SwitchyardError {
  return e instanceof SwitchyardError;
}
