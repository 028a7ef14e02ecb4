/**
 * Real `ws` clients of `/provide` for the discovery tests. Every socket opened
 * here is remembered so a file can terminate them all in its teardown.
 */
import { WebSocket } from 'ws';

const sockets: WebSocket[] = [];

export function provideUrl(base: string, query: string): string {
  return `${base.replace(/^http/, 'ws')}/provide?${query}`;
}

/** Connects a provider; resolves once the socket is open. */
export function provide(base: string, query: string, opts: { autoPong?: boolean } = {}): Promise<WebSocket> {
  const ws = new WebSocket(provideUrl(base, query), opts);
  sockets.push(ws);
  return new Promise((resolve, reject) => {
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

/** Connects and expects the server to refuse: the error frame and the close code. */
export function refused(base: string, query: string): Promise<{ frame: { error: string; code: string }; code: number }> {
  const ws = new WebSocket(provideUrl(base, query));
  sockets.push(ws);
  return new Promise((resolve, reject) => {
    let frame: { error: string; code: string } | undefined;
    ws.on('message', (data) => (frame = JSON.parse(data.toString())));
    ws.on('close', (code) => (frame ? resolve({ frame, code }) : reject(new Error(`closed ${code} without an error frame`))));
    ws.on('error', reject);
  });
}

/** Terminates every provider socket opened so far. */
export function terminateProviders(): void {
  for (const s of sockets.splice(0)) s.terminate();
}
