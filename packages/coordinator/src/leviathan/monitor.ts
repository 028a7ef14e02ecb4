/**
 * The `/leviathan/monitor` websocket, Leviathan's protocol:
 *
 *   → {"type":"start","sequence":S,"monitor":"CIN","monitorID"?:M,"parameters":{"cinID":C,"container_tag"?:T}}
 *   ← {"type":"response","sequence":S,"response":{"monitorID":M,"state":[{containerID,ipaddress,tag}]}}
 *   ← {"type":"error","sequence":S,"response":{"message":…}}
 *   ← {"type":"event","monitorID":M,"event":"create"|"delete"|"update","message":[{containerID,ipaddress,tag}]}
 *
 * Beyond Leviathan: several monitors per connection, `delete` and `update`
 * events, and `{"type":"stop","sequence":S,"monitorID":M}`. When etcd stops
 * answering, every connection gets
 *   ← {"type":"error","sequence":null,"code":"ETCD_UNAVAILABLE","response":{"message":…}}
 * and when it is back `{"type":"status","code":"ETCD_AVAILABLE",…}`, after
 * which events resume with whatever changed meanwhile.
 *
 * A `monitorID` in a start REPLACES that monitor (Leviathan's words); one
 * this connection does not hold is an error, not a new monitor, so the
 * per-connection limit cannot be sidestepped by naming new ids. Every
 * `pingIntervalMs` the server pings each connection and terminates one that
 * did not answer the previous ping (the ws README's heartbeat), so a
 * half-open peer does not keep its monitors forever.
 *
 * Events come from the repository's etcd watch, not from this coordinator's
 * own writes, so a client sees changes made through any coordinator. Each
 * monitor remembers what it last told its client; after every batch of etcd
 * changes it compares that with the CIN's current state and sends the
 * difference, so a burst of writes becomes one event per kind.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { WebSocket } from 'ws';
import { MonitorStart, MonitorStop, type MonitorItem } from '@switchyard/shared';
import { onEtcdOutage } from '../store/etcd-outage.js';
import type { LevModel } from './model.js';
import type { LeviathanRepository } from './repository.js';

export interface MonitorOptions {
  /** Most monitors one connection may hold (default 64). */
  maxMonitorsPerConnection?: number;
  /** Ping period; a peer that missed the previous pong is dropped (ms, default 10 s: --ping-interval). */
  pingIntervalMs?: number;
}

interface Monitor {
  id: string;
  cinId: string;
  tag?: string;
  /** What the client was last told, by containerID/cenID. */
  sent: Map<string, MonitorItem>;
}

interface Connection {
  socket: WebSocket;
  monitors: Map<string, Monitor>;
  /** Answered the last ping (or connected since it was sent). */
  alive: boolean;
}

/** The monitored CIN's items, keyed by (container, CEN): one per address. */
export function cinItems(m: LevModel, cinId: string, tag?: string): Map<string, MonitorItem> {
  const out = new Map<string, MonitorItem>();
  const cin = m.cins.get(cinId);
  for (const a of cin?.addresses ?? []) {
    const t = m.containers.get(a.containerID)?.tag ?? null;
    if (tag !== undefined && t !== tag) continue;
    out.set(`${a.containerID}/${a.cenID}`, { containerID: a.containerID, ipaddress: a.ip, tag: t });
  }
  return out;
}

/** What changed between two states of a monitor. */
export function diffItems(before: Map<string, MonitorItem>, after: Map<string, MonitorItem>): Record<'create' | 'delete' | 'update', MonitorItem[]> {
  const out = { create: [] as MonitorItem[], delete: [] as MonitorItem[], update: [] as MonitorItem[] };
  for (const [k, v] of after) {
    const old = before.get(k);
    if (!old) out.create.push(v);
    else if (old.ipaddress !== v.ipaddress || old.tag !== v.tag) out.update.push(v);
  }
  for (const [k, v] of before) if (!after.has(k)) out.delete.push(v);
  return out;
}

export class MonitorHub {
  private readonly connections = new Set<Connection>();
  private scheduled = false;
  private readonly max: number;
  private readonly pingIntervalMs: number;
  private sweeper?: NodeJS.Timeout;
  private readonly onChange = () => this.schedule();
  private unsubscribe = () => undefined as void;

  constructor(
    private readonly repo: LeviathanRepository,
    private readonly log: FastifyBaseLogger,
    opts: MonitorOptions = {},
  ) {
    this.max = opts.maxMonitorsPerConnection ?? 64;
    this.pingIntervalMs = opts.pingIntervalMs ?? 10_000;
  }

  start(): void {
    this.repo.mirror.on('change', this.onChange);
    this.repo.mirror.on('resync', this.onChange);
    this.sweeper = setInterval(() => this.sweep(), this.pingIntervalMs);
    this.sweeper.unref();
    this.unsubscribe = onEtcdOutage(this.repo.mirror.client, {
      down: (e) => this.broadcast({ type: 'error', sequence: null, code: e.code, response: { message: `${e.message}; monitor events pause` } }),
      up: () => this.broadcast({ type: 'status', sequence: null, code: 'ETCD_AVAILABLE', response: { message: 'etcd answers again; monitor events resume' } }),
    });
  }

  private broadcast(msg: unknown): void {
    for (const conn of this.connections) this.send(conn, msg);
  }

  stop(): void {
    this.unsubscribe();
    clearInterval(this.sweeper);
    this.repo.mirror.off('change', this.onChange);
    this.repo.mirror.off('resync', this.onChange);
    for (const c of this.connections) c.socket.terminate();
    this.connections.clear();
  }

  /** The websocket handler. */
  readonly handle = (socket: WebSocket): void => {
    const conn: Connection = { socket, monitors: new Map(), alive: true };
    this.connections.add(conn);
    socket.on('pong', () => {
      conn.alive = true;
    });
    // Requests of one connection are handled in order.
    let queue = Promise.resolve();
    socket.on('message', (data, isBinary) => {
      queue = queue.then(() => this.onMessage(conn, isBinary ? '' : data.toString())).catch((err) => this.log.error({ err }, 'monitor request failed'));
    });
    socket.on('close', () => this.connections.delete(conn));
    socket.on('error', () => this.connections.delete(conn));
  };

  /** One sweep for all connections (not a timer each): drop the silent, ping the rest. */
  private sweep(): void {
    for (const conn of this.connections) {
      if (!conn.alive) {
        this.log.debug({ monitors: conn.monitors.size }, 'monitor peer missed a pong; dropping it');
        this.connections.delete(conn);
        conn.socket.terminate();
        continue;
      }
      conn.alive = false;
      conn.socket.ping();
    }
  }

  private send(conn: Connection, msg: unknown): void {
    if (conn.socket.readyState === conn.socket.OPEN) conn.socket.send(JSON.stringify(msg));
  }

  private error(conn: Connection, sequence: unknown, message: string): void {
    this.send(conn, { type: 'error', sequence: sequence ?? null, response: { message } });
  }

  private async onMessage(conn: Connection, text: string): Promise<void> {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      return this.error(conn, null, `Request is not valid JSON: ${(e as Error).message}`);
    }
    const sequence = typeof json === 'object' && json !== null && 'sequence' in json ? (json as { sequence: unknown }).sequence : null;
    const type = typeof json === 'object' && json !== null && 'type' in json ? (json as { type: unknown }).type : undefined;
    if (type === 'stop') {
      const stop = MonitorStop.safeParse(json);
      if (!stop.success) return this.error(conn, sequence, `Bad stop request: ${stop.error.issues.map((i) => `${i.path.join('.') || 'request'}: ${i.message}`).join('; ')}`);
      if (!conn.monitors.delete(stop.data.monitorID)) return this.error(conn, sequence, `No monitor ${stop.data.monitorID}`);
      return this.send(conn, { type: 'response', sequence, response: { monitorID: stop.data.monitorID, state: [] } });
    }
    const start = MonitorStart.safeParse(json);
    if (!start.success) {
      return this.error(conn, sequence, `Bad request: ${start.error.issues.map((i) => `${i.path.join('.') || 'request'}: ${i.message}`).join('; ')}`);
    }
    const req = start.data;
    try {
      await this.repo.fresh();
    } catch (e) {
      return this.error(conn, sequence, (e as Error).message);
    }
    const m = this.repo.model();
    if (!m.cins.has(req.parameters.cinID)) return this.error(conn, sequence, `CIN ${req.parameters.cinID} not found`);
    // A monitorID names the monitor to replace; only a start without one makes a new monitor.
    if (req.monitorID !== undefined && !conn.monitors.has(req.monitorID)) return this.error(conn, sequence, `No monitor ${req.monitorID} to replace`);
    if (req.monitorID === undefined && conn.monitors.size >= this.max) return this.error(conn, sequence, `At most ${this.max} monitors per connection`);
    const id = req.monitorID ?? randomUUID();
    const items = cinItems(m, req.parameters.cinID, req.parameters.container_tag);
    conn.monitors.set(id, { id, cinId: req.parameters.cinID, tag: req.parameters.container_tag, sent: items });
    this.send(conn, { type: 'response', sequence, response: { monitorID: id, state: [...items.values()] } });
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.connections.size === 0) return;
    const m = this.repo.model();
    for (const conn of this.connections) {
      for (const mon of conn.monitors.values()) {
        const now = cinItems(m, mon.cinId, mon.tag);
        const d = diffItems(mon.sent, now);
        mon.sent = now;
        for (const event of ['delete', 'update', 'create'] as const) {
          if (d[event].length > 0) this.send(conn, { type: 'event', monitorID: mon.id, event, message: d[event] });
        }
      }
    }
  }
}
