/**
 * Portal's CLI (nanopack/portal, `commands/`), replayed: every request body is
 * written here byte for byte as the CLI marshals it — `core.Service` /
 * `core.Server` through encoding/json, so every field the user did not give is
 * there with its Go zero value (`""`, `0`), fields tagged `omitempty` (`id`,
 * `interface`, `servers`) are left out when empty, and the cobra flag defaults
 * (`-T tcp`, `-s wlc`, `-f g`, `-w 1`) fill the structs the flag-driven
 * commands send. The CLI prints the answer verbatim, so the answers are
 * checked as raw text: Portal's field order and field set, and its newline.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../packages/coordinator/src/index.js';
import { testCoordinator } from '../helpers/coordinator.js';

let c: Coordinator;
beforeAll(async () => {
  c = await testCoordinator('conformance-portal');
});
afterAll(() => c.close());

/**
 * One CLI request: the CLI's `rest()` sends the body with no content type
 * (Go's http.NewRequest sets none) and the token header; it prints the body.
 */
async function cli(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: string) {
  const r = await c.app.inject({ method, url: `/${path}`, headers: { 'x-auth-token': '' }, ...(body === undefined ? {} : { payload: body }) });
  return { status: r.statusCode, text: r.body, type: String(r.headers['content-type']) };
}

async function stored(id: string): Promise<unknown> {
  return c.ctx.etcd.get(c.ctx.keys.l4.service(id)).json();
}

describe('services', () => {
  it('add-service -O 10.0.0.1 -R 80: the flag defaults, netmask "" and persistence 0; no id (omitempty)', async () => {
    const r = await cli('POST', 'services', '{"host":"10.0.0.1","port":80,"type":"tcp","scheduler":"wlc","persistence":0,"netmask":""}');
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/^application\/json/);
    expect(r.text).toBe('{"id":"tcp-10_0_0_1-80","host":"10.0.0.1","port":80,"type":"tcp","scheduler":"wlc","persistence":0,"netmask":""}\n');
  });

  it('add-service -j with only some fields: json.Unmarshal over the flag defaults', async () => {
    // `-j '{"host":"10.0.0.2","port":443,"scheduler":"rr"}'` keeps type tcp from -T.
    const r = await cli('POST', 'services', '{"host":"10.0.0.2","port":443,"type":"tcp","scheduler":"rr","persistence":0,"netmask":""}');
    expect(r.text).toBe('{"id":"tcp-10_0_0_2-443","host":"10.0.0.2","port":443,"type":"tcp","scheduler":"rr","persistence":0,"netmask":""}\n');
  });

  it('add-service again: the existing service, unchanged (Portal\'s idempotent add)', async () => {
    const r = await cli('POST', 'services', '{"host":"10.0.0.2","port":443,"type":"tcp","scheduler":"wlc","persistence":0,"netmask":""}');
    expect(r.status).toBe(200);
    expect(JSON.parse(r.text)).toMatchObject({ id: 'tcp-10_0_0_2-443', scheduler: 'rr' });
  });

  it('show-service -I ID and show-services print the service without `servers` when it has none', async () => {
    const one = await cli('GET', 'services/tcp-10_0_0_1-80');
    expect(one.text).toBe('{"id":"tcp-10_0_0_1-80","host":"10.0.0.1","port":80,"type":"tcp","scheduler":"wlc","persistence":0,"netmask":""}\n');
    const all = await cli('GET', 'services');
    expect(all.text).toBe(
      '[{"id":"tcp-10_0_0_1-80","host":"10.0.0.1","port":80,"type":"tcp","scheduler":"wlc","persistence":0,"netmask":""},' +
        '{"id":"tcp-10_0_0_2-443","host":"10.0.0.2","port":443,"type":"tcp","scheduler":"rr","persistence":0,"netmask":""}]\n',
    );
  });

  it('set-service -I ID -j …: the id the CLI filled in is sent too, and ignored for the body\'s own', async () => {
    const r = await cli(
      'PUT',
      'services/tcp-10_0_0_2-443',
      '{"id":"tcp-10_0_0_2-443","host":"10.0.0.2","port":443,"type":"tcp","scheduler":"sh","persistence":300,"netmask":"255.255.255.0"}',
    );
    expect(r.status).toBe(200);
    expect(r.text).toBe('{"id":"tcp-10_0_0_2-443","host":"10.0.0.2","port":443,"type":"tcp","scheduler":"sh","persistence":300,"netmask":"255.255.255.0"}\n');
  });

  it('set-services -j \'[{"host":"10.0.0.1","port":80,"scheduler":"rr"}]\': a fresh core.Service, so type "" and netmask "" mean the defaults', async () => {
    const r = await cli('PUT', 'services', '[{"host":"10.0.0.1","port":80,"type":"","scheduler":"rr","persistence":0,"netmask":""}]');
    expect(r.status).toBe(200);
    expect(r.text).toBe('[{"id":"tcp-10_0_0_1-80","host":"10.0.0.1","port":80,"type":"tcp","scheduler":"rr","persistence":0,"netmask":""}]\n');
    // The set replaced everything: the other service is gone.
    expect((await cli('GET', 'services/tcp-10_0_0_2-443')).status).toBe(404);
  });

  it('set-services with embedded servers: every server field at its zero value; weight 0 stays 0 (no traffic)', async () => {
    const r = await cli(
      'PUT',
      'services',
      '[{"host":"10.0.0.1","port":80,"type":"","scheduler":"","persistence":0,"netmask":"","servers":[{"host":"192.168.0.5","port":80,"forwarder":"","weight":0,"upper_threshold":0,"lower_threshold":0}]}]',
    );
    expect(r.status).toBe(200);
    expect(r.text).toBe(
      '[{"id":"tcp-10_0_0_1-80","host":"10.0.0.1","port":80,"type":"tcp","scheduler":"wlc","persistence":0,"netmask":"",' +
        '"servers":[{"id":"192_168_0_5-80","host":"192.168.0.5","port":80,"forwarder":"g","weight":0,"upper_threshold":0,"lower_threshold":0}]}]\n',
    );
    expect(await stored('tcp-10_0_0_1-80')).toMatchObject({ scheduler: 'wlc', servers: [{ forwarder: 'g', weight: 0 }] });
  });

  it('errors are Portal\'s {"error": …} and a newline', async () => {
    const r = await cli('POST', 'services', '{"host":"","port":0,"type":"tcp","scheduler":"wlc","persistence":0,"netmask":""}');
    expect(r.status).toBe(400);
    expect(r.text.endsWith('}\n')).toBe(true);
    expect(JSON.parse(r.text).error).toEqual(expect.any(String));
    const missing = await cli('GET', 'services/tcp-10_9_9_9-1');
    expect(missing.status).toBe(404);
    expect(missing.text).toMatch(/^\{"error":"No Service Found".*\}\n$/);
  });
});

describe('servers', () => {
  const svc = 'services/tcp-10_0_0_1-80';

  it('set-servers -I ID -j \'[{"host":"192.168.0.5","port":80}]\': forwarder "", weight 0 and thresholds 0 as the CLI sends them', async () => {
    const r = await cli('PUT', `${svc}/servers`, '[{"host":"192.168.0.5","port":80,"forwarder":"","weight":0,"upper_threshold":0,"lower_threshold":0}]');
    expect(r.status).toBe(200);
    expect(r.text).toBe('[{"id":"192_168_0_5-80","host":"192.168.0.5","port":80,"forwarder":"g","weight":0,"upper_threshold":0,"lower_threshold":0}]\n');
  });

  it('add-server -I ID -o 192.168.0.6 -p 8080: the flag defaults forwarder g, weight 1', async () => {
    const r = await cli('POST', `${svc}/servers`, '{"host":"192.168.0.6","port":8080,"forwarder":"g","weight":1,"upper_threshold":0,"lower_threshold":0}');
    expect(r.status).toBe(200);
    expect(r.text).toBe('{"id":"192_168_0_6-8080","host":"192.168.0.6","port":8080,"forwarder":"g","weight":1,"upper_threshold":0,"lower_threshold":0}\n');
  });

  it('add-server -j with forwarder "" (the user overwrote the flag default with the zero value)', async () => {
    const r = await cli('POST', `${svc}/servers`, '{"host":"192.168.0.7","port":8080,"forwarder":"","weight":3,"upper_threshold":0,"lower_threshold":0}');
    expect(r.text).toBe('{"id":"192_168_0_7-8080","host":"192.168.0.7","port":8080,"forwarder":"g","weight":3,"upper_threshold":0,"lower_threshold":0}\n');
  });

  it('show-servers and show-server print Portal\'s server fields, in its order', async () => {
    const all = await cli('GET', `${svc}/servers`);
    expect(all.text).toBe(
      '[{"id":"192_168_0_5-80","host":"192.168.0.5","port":80,"forwarder":"g","weight":0,"upper_threshold":0,"lower_threshold":0},' +
        '{"id":"192_168_0_6-8080","host":"192.168.0.6","port":8080,"forwarder":"g","weight":1,"upper_threshold":0,"lower_threshold":0},' +
        '{"id":"192_168_0_7-8080","host":"192.168.0.7","port":8080,"forwarder":"g","weight":3,"upper_threshold":0,"lower_threshold":0}]\n',
    );
    const one = await cli('GET', `${svc}/servers/192_168_0_6-8080`);
    expect(one.text).toBe('{"id":"192_168_0_6-8080","host":"192.168.0.6","port":8080,"forwarder":"g","weight":1,"upper_threshold":0,"lower_threshold":0}\n');
  });

  it('show-service prints `servers` once there are some', async () => {
    const r = await cli('GET', svc);
    expect(Object.keys(JSON.parse(r.text))).toEqual(['id', 'host', 'port', 'type', 'scheduler', 'persistence', 'netmask', 'servers']);
  });

  it('remove-server -I ID -S SID: {"msg":"Success"}, and again once it is gone', async () => {
    const r = await cli('DELETE', `${svc}/servers/192_168_0_7-8080`);
    expect([r.status, r.text]).toEqual([200, '{"msg":"Success"}\n']);
    const again = await cli('DELETE', `${svc}/servers/192_168_0_7-8080`);
    expect([again.status, again.text]).toEqual([200, '{"msg":"Success"}\n']);
    expect((await cli('GET', `${svc}/servers/192_168_0_7-8080`)).status).toBe(404);
  });

  it('set-servers -j \'[]\' empties the service, which then prints without `servers`', async () => {
    expect((await cli('PUT', `${svc}/servers`, '[]')).text).toBe('[]\n');
    expect((await cli('GET', `${svc}/servers`)).text).toBe('[]\n');
    expect((await cli('GET', svc)).text).toBe('{"id":"tcp-10_0_0_1-80","host":"10.0.0.1","port":80,"type":"tcp","scheduler":"wlc","persistence":0,"netmask":""}\n');
  });

  it('remove-service -I ID: {"msg":"Success"}, and again once it is gone', async () => {
    const r = await cli('DELETE', svc);
    expect([r.status, r.text]).toEqual([200, '{"msg":"Success"}\n']);
    const again = await cli('DELETE', svc);
    expect([again.status, again.text]).toEqual([200, '{"msg":"Success"}\n']);
    expect((await cli('GET', 'services')).text).toBe('[]\n');
  });
});

describe('what Switchyard keeps stricter than Portal (README: differences)', () => {
  it('an invalid scheduler is a 400 (Portal stored it and failed in ipvsadm later), and nothing is written', async () => {
    const before = await c.ctx.etcd.getAll().prefix(c.ctx.keys.l4.services).strings();
    const r = await cli('POST', 'services', '{"host":"10.0.0.3","port":80,"type":"tcp","scheduler":"bogus","persistence":0,"netmask":""}');
    expect(r.status).toBe(400);
    expect(r.text.endsWith('\n')).toBe(true);
    expect(await c.ctx.etcd.getAll().prefix(c.ctx.keys.l4.services).strings()).toEqual(before);
  });

  it('add-server under an unknown service is a 404, not a new service', async () => {
    const r = await cli('POST', 'services/tcp-10_9_9_9-1/servers', '{"host":"192.168.0.5","port":80,"forwarder":"g","weight":1,"upper_threshold":0,"lower_threshold":0}');
    expect(r.status).toBe(404);
  });
});
