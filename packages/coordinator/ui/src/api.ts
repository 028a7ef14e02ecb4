/**
 * The page's only way to change anything: the coordinator's REST API, with
 * the token the operator typed (kept for this tab only, in sessionStorage).
 */
const TOKEN_KEY = 'switchyard-token';

export function savedToken(): string {
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

export function saveToken(token: string): void {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export async function call(method: 'GET' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<unknown> {
  const headers: Record<string, string> = {};
  const token = savedToken();
  if (token) headers['X-AUTH-TOKEN'] = token;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      const parsed = JSON.parse(text) as { error?: string };
      if (parsed.error) message = parsed.error;
    } catch {
      // not JSON: the status line says enough
    }
    throw new ApiError(res.status, message);
  }
  return text ? JSON.parse(text) : null;
}

/** True when the API answers with the saved token (or needs none); false on 401. */
export async function tokenAccepted(): Promise<boolean> {
  try {
    await call('GET', '/hosts');
    return true;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return false;
    throw e;
  }
}

export function feedUrl(): string {
  const url = new URL('/ui/feed', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const token = savedToken();
  // Browsers cannot set headers on a websocket: the query parameter is Portal's other way.
  if (token) url.searchParams.set('X-AUTH-TOKEN', token);
  return url.toString();
}
