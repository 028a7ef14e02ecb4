/** `/provide` parameters → record: the rules, without sockets or etcd. */
import { describe, expect, it } from 'vitest';
import { parseProvideRequest, peerHost, recordKey, skyapiRecordId } from '../../packages/coordinator/src/discovery/provide-request.js';

describe('parseProvideRequest', () => {
  it('fills skyapi\'s defaults and the peer address', () => {
    const r = parseProvideRequest('/provide?service=foo&port=9999', '::ffff:10.1.1.1');
    expect(r).toMatchObject({ service: 'foo', categories: ['services'], record: { host: '10.1.1.1', port: 9999, priority: 1, weight: 100 } });
    expect('value' in r && r.value).toBe('{"host":"10.1.1.1","port":9999,"priority":1,"weight":100}');
  });

  it('keys the record by root and categories, both reversed', () => {
    const r = parseProvideRequest('/provide?service=Foo&port=1&category=services,Production', '127.0.0.1');
    if (!('record' in r)) throw r;
    expect(recordKey('skydns.local', r, 'abc-1')).toBe('/skydns/local/skydns/production/services/foo/abc-1');
    expect(recordKey('Turtles.COM.', r, 'x')).toBe('/skydns/com/turtles/production/services/foo/x');
  });

  it('canonicalises hosts and treats 0.0.0.0 and :: as "the peer"', () => {
    const h = (host: string) => {
      const r = parseProvideRequest(`/provide?service=a&port=1&host=${encodeURIComponent(host)}`, '192.0.2.7');
      return 'record' in r ? r.record.host : r.message;
    };
    expect(h('0.0.0.0')).toBe('192.0.2.7');
    expect(h('::')).toBe('192.0.2.7');
    expect(h('[::]')).toBe('192.0.2.7');
    expect(h('FD00:0:0::1')).toBe('fd00::1');
    expect(h('[fd00::2]')).toBe('fd00::2');
    expect(h('Node-1.Example.com.')).toBe('node-1.example.com');
    expect(h('1.2.3')).toBe('host must be an IP address or a host name');
    expect(h('a_b..c')).toBe('host must be an IP address or a host name');
  });

  it('keeps lb, with the weight only when it was given', () => {
    const a = parseProvideRequest('/provide?service=a&port=1&lb=tcp-10_0_0_1-80', '10.0.0.2');
    expect('lb' in a && a.lb).toEqual({ serviceId: 'tcp-10_0_0_1-80' });
    const b = parseProvideRequest('/provide?service=a&port=1&lb=tcp-10_0_0_1-80&weight=3', '10.0.0.2');
    expect('lb' in b && b.lb).toEqual({ serviceId: 'tcp-10_0_0_1-80', weight: 3 });
  });

  it('says everything that is wrong at once', () => {
    const r = parseProvideRequest('/provide?port=x&priority=99999', '10.0.0.2');
    expect('record' in r).toBe(false);
    expect('code' in r && r.code).toBe('INVALID');
    expect('message' in r && r.message).toBe('service is required; port must be a whole number; priority must be at most 65535');
  });

  it('ignores parameters it does not know, such as the token', () => {
    const r = parseProvideRequest('/provide?service=a&port=1&X-AUTH-TOKEN=s3cret', '10.0.0.2');
    expect('record' in r).toBe(true);
  });

  it('reads the peer of a dual-stack socket as IPv4', () => {
    expect(peerHost('::ffff:127.0.0.1')).toBe('127.0.0.1');
    expect(peerHost('::1')).toBe('::1');
    expect(peerHost(undefined)).toBeUndefined();
  });
});

describe('skyapi record ids', () => {
  // Expected values computed with Go's fmt (Fprint, and %#v for a list), as
  // skyapi's server hashes them.
  it('hash service, category, host and port as received; a prefix keeps 20 hex', () => {
    expect(skyapiRecordId({ service: 'foo', category: 'services', host: '127.0.0.1', port: 9999 })).toBe('10ec6ea983c7a572acb0a023b9d645f6765c5a68');
    expect(skyapiRecordId({ service: 'web', category: 'services', host: '10.0.0.7', port: 8080 }, 'dc1')).toBe('dc1-8943bafc27883202dc57');
  });
  it('hash several categories as Go prints a []string with %#v', () => {
    expect(skyapiRecordId({ service: 'bar', category: 'services,production', host: '10.1.2.3', port: 80 })).toBe('5378f00fecf7e77dc3a424dddaf69132ee60b846');
  });
  it('come from the query: peer host when none is given, default category, prefix lower-cased', () => {
    const r = parseProvideRequest('/provide?port=8080&prefix=DC1&priority=1&service=web&weight=100', '::ffff:10.0.0.7');
    expect('id' in r && r.id).toBe('dc1-8943bafc27883202dc57');
    const same = parseProvideRequest('/provide?service=web&port=8080&host=0.0.0.0&prefix=dc1', '10.0.0.7');
    expect('id' in same && same.id).toBe('dc1-8943bafc27883202dc57');
  });
  it('refuse a prefix that cannot stay in one DNS label', () => {
    for (const prefix of ['a.b', 'a/b', 'x'.repeat(39), '-a']) {
      const r = parseProvideRequest(`/provide?service=web&port=1&prefix=${encodeURIComponent(prefix)}`, '10.0.0.7');
      expect('message' in r && r.message, prefix).toMatch(/^prefix must be a DNS label/);
    }
    const ok = parseProvideRequest(`/provide?service=web&port=1&prefix=${'x'.repeat(38)}`, '10.0.0.7');
    expect('id' in ok && ok.id).toMatch(/^x{38}-[0-9a-f]{20}$/);
  });
});
