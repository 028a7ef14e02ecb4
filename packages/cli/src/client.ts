/**
 * The HTTP client behind `switchyard service|server|hosts|ports …`.
 * Errors come back as `ApiError` with the coordinator's own message.
 */
import type { FlagValues } from './flags.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface ApiResponse<T = unknown> {
  status: number;
  data: T;
  revision?: number;
}

export class ApiClient {
  constructor(
    readonly base: string,
    private readonly token?: string,
  ) {}

  static fromFlags(values: FlagValues): ApiClient {
    if (values.insecure) process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
    return new ApiClient(String(values.api).replace(/\/+$/, ''), values.token as string | undefined);
  }

  /** `onUpload(sent, total)` is told as the body goes out, in 64 KiB steps. */
  async request<T = unknown>(method: string, path: string, body?: unknown, onUpload?: (sent: number, total: number) => void): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = {};
    if (this.token) headers['X-AUTH-TOKEN'] = this.token;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    try {
      const text = body === undefined ? undefined : JSON.stringify(body);
      res = await fetch(`${this.base}${path}`, { method, headers, ...(text !== undefined && onUpload ? streamed(text, headers, onUpload) : { body: text }) });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new ApiError(0, `cannot reach the coordinator at ${this.base}: ${cause?.code ?? cause?.message ?? (e as Error).message}`);
    }
    const text = await res.text();
    let data: unknown = text;
    try {
      data = text ? JSON.parse(text) : undefined;
    } catch {
      /* not JSON: keep the text */
    }
    if (!res.ok) {
      const msg = errorMessage(data) ?? (text || res.statusText);
      throw new ApiError(res.status, `${res.status}: ${msg}`);
    }
    const rev = res.headers.get('x-switchyard-revision');
    return { status: res.status, data: data as T, revision: rev ? Number(rev) : undefined };
  }
}

/** A body sent in chunks, each reported as it is pulled onto the socket. */
function streamed(text: string, headers: Record<string, string>, onUpload: (sent: number, total: number) => void) {
  const bytes = Buffer.from(text);
  headers['content-length'] = String(bytes.length);
  const step = 64 * 1024;
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= bytes.length) return controller.close();
      const chunk = bytes.subarray(sent, sent + step);
      sent += chunk.length;
      controller.enqueue(chunk);
      onUpload(sent, bytes.length);
    },
  });
  // Node's fetch needs `duplex` for a streamed request body.
  return { body, duplex: 'half' } as RequestInit;
}

export function print(values: FlagValues, data: unknown): void {
  if (data === undefined) return;
  process.stdout.write(`${values.json ? JSON.stringify(data) : JSON.stringify(data, null, 2)}\n`);
}

/**
 * The message of an error body: Switchyard's `{error, code}`, or Django REST
 * framework's shapes on Portmaster's routes (`{detail}`, `{field: [msgs]}`,
 * `[msgs]`).
 */
export function errorMessage(data: unknown): string | undefined {
  if (Array.isArray(data)) return data.map(String).join(' ');
  if (typeof data !== 'object' || data === null) return undefined;
  const o = data as Record<string, unknown>;
  if ('error' in o) return String(o.error);
  if ('detail' in o) return String(o.detail);
  const fields = Object.entries(o).filter(([, v]) => Array.isArray(v));
  if (fields.length === 0) return undefined;
  return fields.map(([k, v]) => (k === 'non_field_errors' ? '' : `${k}: `) + (v as unknown[]).map(String).join(' ')).join('; ');
}
