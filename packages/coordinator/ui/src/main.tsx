/**
 * The Switchyard dashboard. One websocket (/ui/feed) keeps the store current;
 * renders are batched to one per animation frame, so a burst of changes
 * costs one render. Sections are addressed by the URL hash (#services, …).
 */
import './app.css';
import { render, type JSX } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { FeedMessage } from '../../src/ui/protocol.ts';
import { feedUrl, saveToken, savedToken, tokenAccepted } from './api.ts';
import { ConfirmDialog, type Action } from './confirm.tsx';
import { Store } from './store.ts';
import { HostsView, NetworksView, PortsView, ProvidersView, ServicesView, type ViewProps } from './views.tsx';

type Conn = 'connecting' | 'live' | 'reconnecting' | 'token';

const SECTIONS = [
  { id: 'services', label: 'Services', view: ServicesView, count: (s: Store) => (s.complete ? s.services.size : s.totalServices) },
  { id: 'hosts', label: 'Hosts', view: HostsView, count: (s: Store) => s.hosts.size },
  { id: 'ports', label: 'Ports', view: PortsView, count: (s: Store) => s.pm.size },
  { id: 'networks', label: 'Networks', view: NetworksView, count: (s: Store) => s.lev.cens.length + s.lev.cins.length },
  { id: 'providers', label: 'Providers', view: ProvidersView, count: (s: Store) => s.providers.size },
] as const;

function currentSection(): string {
  const id = location.hash.replace(/^#/, '');
  return SECTIONS.some((s) => s.id === id) ? id : 'services';
}

function TokenForm({ refused, onSubmit }: { refused: boolean; onSubmit(token: string): void }) {
  const [value, setValue] = useState('');
  return (
    <section class="token card" aria-labelledby="token-title">
      <h2 id="token-title">This coordinator needs a token</h2>
      <p>Enter the API token (the coordinator's --token). It is kept in this browser tab only and sent as X-AUTH-TOKEN.</p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          onSubmit(value);
        }}
      >
        <p class="field">
          <label for="token-input">API token</label>
          <input id="token-input" type="password" autoComplete="current-password" value={value} autoFocus required onInput={(e) => setValue((e.target as HTMLInputElement).value)} />
        </p>
        {refused && (
          <p class="error-text" role="alert">
            That token was refused.
          </p>
        )}
        <button type="submit" class="button primary">
          Connect
        </button>
      </form>
    </section>
  );
}

function App() {
  const store = useMemo(() => new Store(), []);
  const [version, setVersion] = useState(0);
  const [conn, setConn] = useState<Conn>('connecting');
  const [refused, setRefused] = useState(false);
  const [section, setSection] = useState(currentSection());
  const [action, setAction] = useState<Action | null>(null);
  const [notice, setNotice] = useState<{ ok: boolean; text: string } | null>(null);
  const [now, setNow] = useState(Date.now());
  const reconnect = useRef<() => void>(() => undefined);

  useEffect(() => {
    let ws: WebSocket | undefined;
    let stopped = false;
    let retry: ReturnType<typeof setTimeout> | undefined;
    let frame = 0;
    const later = () => {
      if (!stopped) retry = setTimeout(connect, 1000);
    };
    const connect = async () => {
      clearTimeout(retry);
      try {
        if (!(await tokenAccepted())) {
          setRefused(savedToken() !== '');
          setConn('token');
          return;
        }
      } catch {
        setConn((c) => (c === 'connecting' ? c : 'reconnecting'));
        return later();
      }
      const socket = new WebSocket(feedUrl());
      ws = socket;
      socket.onmessage = (ev) => {
        const msg = JSON.parse(ev.data as string) as FeedMessage;
        store.apply(msg);
        setConn('live');
        // The first screen at once; the rest of a big snapshot and patches at most once a frame.
        if (msg.t === 'snapshot') return setVersion(store.version);
        frame ||= requestAnimationFrame(() => {
          frame = 0;
          setVersion(store.version);
        });
      };
      socket.onclose = () => {
        if (ws !== socket || stopped) return;
        setConn('reconnecting');
        later();
      };
    };
    reconnect.current = () => {
      const old = ws;
      ws = undefined;
      old?.close();
      void connect();
    };
    void connect();
    const onHash = () => setSection(currentSection());
    addEventListener('hashchange', onHash);
    const tick = setInterval(() => setNow(Date.now()), 5000);
    return () => {
      stopped = true;
      ws?.close();
      clearTimeout(retry);
      clearInterval(tick);
      removeEventListener('hashchange', onHash);
    };
  }, []);

  const current = SECTIONS.find((s) => s.id === section) ?? SECTIONS[0];
  const View = current.view as (p: ViewProps) => JSX.Element;
  const status = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', token: 'Token needed' }[conn];

  return (
    <>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <h1>
          <span class="logo" aria-hidden="true">⇄</span> Switchyard
        </h1>
        <p class={`conn ${conn}`} role="status" data-conn={conn}>
          <span class="dot" aria-hidden="true" /> {status}
          {conn === 'live' && <span class="rev"> · revision {store.revision.toLocaleString()}</span>}
        </p>
      </header>
      <nav class="tabs" aria-label="Sections">
        <ul>
          {SECTIONS.map((s) => (
            <li key={s.id}>
              <a href={`#${s.id}`} aria-current={s.id === current.id ? 'page' : undefined}>
                {s.label} <span class="count">{s.count(store).toLocaleString()}</span>
              </a>
            </li>
          ))}
        </ul>
      </nav>
      <main id="main" data-version={version}>
        {notice && (
          <p class={`notice ${notice.ok ? 'ok' : 'bad'}`} role={notice.ok ? 'status' : 'alert'}>
            {notice.text}
            <button type="button" class="link" onClick={() => setNotice(null)} aria-label="Dismiss message">
              ✕
            </button>
          </p>
        )}
        {conn === 'token' ? (
          <TokenForm
            refused={refused}
            onSubmit={(t) => {
              saveToken(t);
              setConn('connecting');
              reconnect.current();
            }}
          />
        ) : conn === 'connecting' ? (
          <p class="empty">Connecting to the coordinator…</p>
        ) : (
          <View store={store} version={version} now={now} ask={setAction} />
        )}
      </main>
      {action && (
        <ConfirmDialog
          action={action}
          onDone={(result) => {
            setAction(null);
            if (result) setNotice(result);
          }}
        />
      )}
    </>
  );
}

const root = document.getElementById('app') as HTMLElement;
// render() adds to what is there: the "Loading…" placeholder goes first.
root.replaceChildren();
render(<App />, root);
