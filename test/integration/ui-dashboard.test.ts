/**
 * The dashboard end to end in Debian's chromium (playwright-core): the page
 * loads from the coordinator alone; a service created through the REST API
 * appears without a reload within 1 s; weight, drain, remove and release done
 * in the page reach etcd (read back from etcd itself); the token prompt.
 * Screenshots of every section go to test-results/ for a person to look at.
 */
import { mkdirSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Page } from 'playwright-core';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { launchChromium } from '../helpers/browser.js';
import { testCoordinator } from '../helpers/coordinator.js';
import { eventually } from '../helpers/eventually.js';

const SHOTS = 'test-results';
let browser: Awaited<ReturnType<typeof launchChromium>>;

beforeAll(async () => {
  mkdirSync(SHOTS, { recursive: true });
  browser = await launchChromium();
});

afterAll(async () => {
  await browser?.close();
});

async function rest(base: string, method: string, path: string, body?: unknown, token?: string) {
  const res = await fetch(base + path, {
    method,
    headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...(token ? { 'X-AUTH-TOKEN': token } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  expect(res.status, `${method} ${path}: ${text}`).toBeLessThan(300);
  return text ? JSON.parse(text) : null;
}

async function open(base: string): Promise<Page> {
  const page = await browser.context.newPage();
  // Nothing but the coordinator: any other request fails the test.
  const foreign: string[] = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(base)) foreign.push(r.url());
  });
  page.on('close', () => expect(foreign).toEqual([]));
  // Fail at the step that hangs, not at the test's timeout.
  page.setDefaultTimeout(5000);
  await page.goto(`${base}/ui`);
  return page;
}

describe('without a token', () => {
  let c: Coordinator;
  let base: string;
  let page: Page;

  beforeAll(async () => {
    c = await testCoordinator('ui-page', { dnsRoot: `uipage${process.pid}.test` });
    base = await c.listen();
    await rest(base, 'POST', '/services', { host: '10.20.0.1', port: 80, scheduler: 'wrr', servers: [
      { host: '10.20.1.1', port: 8080, weight: 5 },
      { host: '10.20.1.2', port: 8080, weight: 5 },
      { host: '10.20.1.3', port: 8080, weight: 2 },
    ] });
    page = await open(base);
  });

  afterAll(async () => {
    await page?.close();
    await c?.close();
  });

  it('loads and goes live', async () => {
    await page.locator('[data-conn="live"]').waitFor({ timeout: 5000 });
    expect(await page.title()).toBe('Switchyard');
    expect(await page.getByRole('heading', { level: 1 }).textContent()).toContain('Switchyard');
    await page.locator('[data-service="tcp-10_20_0_1-80"]').waitFor();
  });

  it('shows a service created through the REST API within 1 s, without a reload', async () => {
    const navigations: string[] = [];
    page.on('framenavigated', (f) => navigations.push(f.url()));
    await rest(base, 'POST', '/services', { host: '10.20.0.2', port: 443, servers: [{ host: '10.20.2.1', port: 8443 }] });
    const started = Date.now();
    await page.locator('[data-service="tcp-10_20_0_2-443"]').waitFor({ timeout: 1000 });
    expect(Date.now() - started).toBeLessThanOrEqual(1000);
    expect(navigations).toEqual([]);
  });

  const stored = async (id: string) => JSON.parse((await c.ctx.etcd.get(c.ctx.keys.l4.service(c.l4.generation().id, id)).string()) ?? 'null');

  it('sets a weight in the page, after a confirmation, and etcd has it', async () => {
    const row = page.locator('[data-service="tcp-10_20_0_1-80"]');
    await row.getByRole('button', { name: 'Set weight of 10.20.1.2:8080' }).click();
    const dialog = page.getByRole('dialog', { name: 'Set weight' });
    await dialog.getByLabel('Weight').fill('7');
    // Cancel first: nothing may change.
    await dialog.getByRole('button', { name: 'Cancel' }).click();
    await expect.poll(() => dialog.count()).toBe(0);
    expect((await stored('tcp-10_20_0_1-80')).servers.map((s: { weight: number }) => s.weight)).toEqual([5, 5, 2]);

    await row.getByRole('button', { name: 'Set weight of 10.20.1.2:8080' }).click();
    await dialog.getByLabel('Weight').fill('-1');
    await dialog.getByRole('button', { name: 'Set weight' }).click();
    await dialog.getByRole('alert').waitFor();
    await dialog.getByLabel('Weight').fill('7');
    await dialog.getByRole('button', { name: 'Set weight' }).click();
    await eventually(async () => (await stored('tcp-10_20_0_1-80')).servers[1].weight === 7);
    expect((await stored('tcp-10_20_0_1-80')).servers.map((s: { weight: number }) => s.weight)).toEqual([5, 7, 2]);
    await row.locator('[data-server="10_20_1_2-8080"]').getByText('w 7').waitFor();
    await page.getByRole('status').filter({ hasText: 'set to 7' }).waitFor();
  });

  it('drains and removes a server through the keyboard', async () => {
    const row = page.locator('[data-service="tcp-10_20_0_1-80"]');
    await row.getByRole('button', { name: 'Drain 10.20.1.3:8080' }).focus();
    await page.keyboard.press('Enter');
    await page.getByRole('dialog', { name: 'Drain server' }).waitFor();
    // Enter on the focused Cancel closes without a change; Tab to Drain and confirm.
    await page.keyboard.press('Tab');
    await page.keyboard.press('Enter');
    await eventually(async () => (await stored('tcp-10_20_0_1-80')).servers[2].weight === 0);

    await row.getByRole('button', { name: 'Remove 10.20.1.1:8080' }).click();
    await page.getByRole('dialog', { name: 'Remove server' }).getByRole('button', { name: 'Remove' }).click();
    await eventually(async () => (await stored('tcp-10_20_0_1-80')).servers.length === 2);
    expect((await stored('tcp-10_20_0_1-80')).servers.map((s: { id: string }) => s.id)).toEqual(['10_20_1_2-8080', '10_20_1_3-8080']);
    await row.locator('[data-server="10_20_1_1-8080"]').waitFor({ state: 'detached' });
  });

  it('releases a port', async () => {
    await rest(base, 'POST', '/v1/services', { name: 'cache', description: 'memcached pool', start: 31000, end: 31019 });
    const offer = await rest(base, 'POST', '/v1/services/cache/offers', { name: 'cache-a' });
    await rest(base, 'POST', `/v1/services/cache/offers/${offer.secret}/accept`);
    await page.getByRole('link', { name: /^Ports/ }).click();
    const card = page.locator('[data-pm="cache"]');
    await card.getByText('1 of 20 in use').waitFor();
    await card.getByText('Instances (1)').click();
    await card.getByRole('button', { name: 'Release port 31000 of cache' }).click();
    await page.getByRole('dialog', { name: 'Release port' }).getByRole('button', { name: 'Release' }).click();
    await eventually(async () => (await c.ctx.etcd.get(c.ctx.keys.pm.port('cache', 31000)).string()) === null);
    await card.getByText('0 of 20 in use').waitFor();
  });

  it('shows every section; screenshots', async () => {
    await fillForScreenshots(c, base);
    await page.getByRole('link', { name: /^Services/ }).click();
    await page.locator('[data-service="udp-10_20_0_9-53"]').waitFor();
    await page.getByText('waiting for edge-3').first().waitFor();
    await page.screenshot({ path: `${SHOTS}/dashboard-services.png`, fullPage: true });
    await page.getByLabel('Search services').fill('10.20.0.2');
    await expect.poll(() => page.locator('tr[data-service]').count()).toBe(1);
    await page.getByLabel('Search services').fill('');

    await page.getByRole('link', { name: /^Hosts/ }).click();
    await page.locator('[data-host="edge-1"]').getByText('alive').waitFor();
    await page.locator('[data-host="edge-3"]').getByText('behind').waitFor();
    await page.screenshot({ path: `${SHOTS}/dashboard-hosts.png`, fullPage: true });

    await page.getByRole('link', { name: /^Ports/ }).click();
    await page.locator('[data-pm="web"]').getByText('3 instances').waitFor();
    await page.locator('[data-pm="web"]').getByText('Instances (3)').click();
    await page.getByRole('button', { name: 'Dismiss message' }).click();
    await page.screenshot({ path: `${SHOTS}/dashboard-ports.png`, fullPage: true });

    await page.getByRole('link', { name: /^Networks/ }).click();
    await page.locator('[data-cin="cin1"]').getByText('10.').first().waitFor();
    await page.screenshot({ path: `${SHOTS}/dashboard-networks.png`, fullPage: true });

    await page.getByRole('link', { name: /^Providers/ }).click();
    await page.getByText('connected').first().waitFor();
    await page.screenshot({ path: `${SHOTS}/dashboard-providers.png`, fullPage: true });
  });
});

/** Agents, reports, ports, container networks and providers, so the screenshots show every part. */
async function fillForScreenshots(c: Coordinator, base: string) {
  const svc = await rest(base, 'POST', '/services', { host: '10.20.0.9', port: 53, type: 'udp', scheduler: 'rr', servers: [{ host: '10.20.9.1', port: 53 }, { host: '10.20.9.2', port: 53 }] });
  expect(svc.id).toBe('udp-10_20_0_9-53');
  const latest = Number((await c.ctx.etcd.get(c.ctx.keys.l4.service(c.l4.generation().id, svc.id)).exec()).kvs[0].mod_revision);
  const now = new Date().toISOString();
  const k = c.ctx.keys.hosts;
  for (const [id, dataplane, applied, errors, warnings] of [
    ['edge-1', 'ipvs', latest, [], []],
    ['edge-2', 'nftables', latest, [], [{ serviceId: 'tcp-10_20_0_1-80', level: 'warning', message: 'server 10.20.1.3:8080 has weight 0' }]],
    ['edge-3', 'ipvs', latest - 3, [{ serviceId: 'tcp-10_20_0_2-443', level: 'error', message: 'ipvsadm: Memory allocation problem' }], []],
  ] as const) {
    await c.ctx.etcd.put(k.agent(id)).value(JSON.stringify({ id, dataplane, version: '0.1.0', startedAt: now }));
    await c.ctx.etcd.put(k.status(id)).value(JSON.stringify({ id, dataplane, appliedRevision: applied, lastSync: now, services: 3, errors, warnings }));
  }
  await c.ctx.etcd.put(k.status('old-edge')).value(JSON.stringify({ id: 'old-edge', dataplane: 'ipvs', appliedRevision: 12, lastSync: '2026-01-01T00:00:00.000Z', services: 0 }));

  await rest(base, 'POST', '/v1/services', { name: 'web', description: 'web workers', start: 30000, end: 30009 });
  for (const name of ['web-1', 'web-2', 'web-3', 'web-4']) {
    const o = await rest(base, 'POST', '/v1/services/web/offers', { name });
    if (name !== 'web-4') await rest(base, 'POST', `/v1/services/web/offers/${o.secret}/accept`);
  }

  await rest(base, 'POST', '/cen/import', { cenList: [{ cenID: 'cen1', containerIDs: ['c1', 'c2'], wiring_type: 'bridge' }] });
  await rest(base, 'POST', '/cin/import', { cin1: ['cen1'] });
  await rest(base, 'POST', '/cen/make', ['cen1']);
  await rest(base, 'POST', '/cin/make', ['cin1']);

  const lease = c.ctx.etcd.lease(60, { autoKeepAlive: false });
  await lease.put(`/skydns/test/uipage${process.pid}/services/api/p1`).value(JSON.stringify({ host: '10.20.5.1', port: 9000, priority: 1, weight: 100 }));
  await c.ctx.etcd.put(`/skydns/test/uipage${process.pid}/services/db/static1`).value(JSON.stringify({ host: '10.20.5.9', port: 5432 }));
}

describe('with a token', () => {
  let c: Coordinator;
  let base: string;

  beforeAll(async () => {
    c = await testCoordinator('ui-token-page', { token: 'sekret', dnsRoot: `uitokenpage${process.pid}.test` });
    base = await c.listen();
    await rest(base, 'POST', '/services', { host: '10.21.0.1', port: 80 }, 'sekret');
  });

  afterAll(async () => {
    await c?.close();
  });

  it('asks for the token, refuses a wrong one, then goes live', async () => {
    const page = await open(base);
    const input = page.getByLabel('API token');
    await input.waitFor();
    await page.locator('[data-conn="token"]').waitFor();
    await input.fill('wrong');
    await input.press('Enter');
    await page.getByRole('alert').filter({ hasText: 'refused' }).waitFor();
    await page.screenshot({ path: `${SHOTS}/dashboard-token.png` });
    await page.getByLabel('API token').fill('sekret');
    await page.getByRole('button', { name: 'Connect' }).click();
    await page.locator('[data-conn="live"]').waitFor();
    await page.locator('[data-service="tcp-10_21_0_1-80"]').waitFor();
    await page.close();
  });
});
