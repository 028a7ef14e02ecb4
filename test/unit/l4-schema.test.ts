import { describe, expect, it } from 'vitest';
import { parseServerId, parseServiceId, serverId, ServerInput, Service, serviceId, ServiceInput } from '@switchyard/shared';

describe('Portal ids', () => {
  it('are built as Portal builds them', () => {
    expect(serviceId({ type: 'tcp', host: '192.168.0.15', port: 80 })).toBe('tcp-192_168_0_15-80');
    expect(serverId({ host: '127.0.0.11', port: 8080 })).toBe('127_0_0_11-8080');
  });
  it('are reversible for IPv4 and IPv6', () => {
    for (const s of [
      { type: 'tcp' as const, host: '10.0.0.1', port: 1 },
      { type: 'udp' as const, host: 'fd00::1', port: 65535 },
      { type: 'tcp' as const, host: '::1', port: 80 },
      { type: 'tcp' as const, host: '2001:db8:0:1::ff', port: 443 },
    ]) {
      expect(parseServiceId(serviceId(s))).toEqual(s);
      expect(parseServerId(serverId(s))).toEqual({ host: s.host, port: s.port });
    }
  });
  it('reject garbage', () => {
    expect(parseServiceId('sctp-10_0_0_1-80')).toBeUndefined();
    expect(parseServiceId('tcp-10_0_0-80')).toBeUndefined();
    expect(parseServerId('nohost-80')).toBeUndefined();
  });
});

describe('stored services', () => {
  it('are parsed as strictly as input (the agent renders them into commands)', () => {
    const ok = { id: 'tcp-10_0_0_1-80', host: '10.0.0.1', port: 80, type: 'tcp', scheduler: 'rr', persistence: 0, netmask: '', servers: [] };
    expect(Service.safeParse(ok).success).toBe(true);
    expect(Service.safeParse({ ...ok, host: '10.0.0.1;x' }).success).toBe(false);
    expect(Service.safeParse({ ...ok, id: 'tcp-10_0_0_2-80' }).success).toBe(false);
    expect(Service.safeParse({ ...ok, hosts: ['-rf'] }).success).toBe(false);
    expect(Service.safeParse({ ...ok, servers: [{ id: 'x', host: '10.0.0.5', port: 1, forwarder: 'g', weight: 1, upper_threshold: 0, lower_threshold: 0 }] }).success).toBe(false);
  });
});

describe('service input', () => {
  it('canonicalises addresses so one service has one id', () => {
    const a = ServiceInput.parse({ host: 'FD00:0:0::1', port: 80 });
    const b = ServiceInput.parse({ host: 'fd00::1', port: 80 });
    expect(a.id).toBe(b.id);
  });
  it('prefers snake_case thresholds over the README spelling when both are sent', () => {
    const s = ServerInput.parse({ host: '10.0.0.1', port: 1, upper_threshold: 7, UpperThreshold: 9 });
    expect(s.upper_threshold).toBe(7);
  });
  it('accepts dotted netmasks and IPv6 prefix lengths, not holes', () => {
    expect(ServiceInput.safeParse({ host: '10.0.0.1', port: 1, netmask: '255.255.255.0' }).success).toBe(true);
    expect(ServiceInput.safeParse({ host: 'fd00::1', port: 1, netmask: '64' }).success).toBe(true);
    expect(ServiceInput.safeParse({ host: '10.0.0.1', port: 1, netmask: '255.0.255.0' }).success).toBe(false);
    expect(ServiceInput.safeParse({ host: '10.0.0.1', port: 1, netmask: '24' }).success).toBe(false);
    expect(ServiceInput.safeParse({ host: 'fd00::1', port: 1, netmask: '129' }).success).toBe(false);
  });
  it('validates pinned host ids', () => {
    expect(ServiceInput.safeParse({ host: '10.0.0.1', port: 1, hosts: ['node-1'] }).success).toBe(true);
    expect(ServiceInput.safeParse({ host: '10.0.0.1', port: 1, hosts: ['a;rm -rf'] }).success).toBe(false);
  });
});

describe('Go zero values (Portal\'s CLI sends every field)', () => {
  it('"" for type, scheduler, forwarder and netmask means the default', () => {
    const s = ServiceInput.parse({ host: '10.0.0.1', port: 80, type: '', scheduler: '', persistence: 0, netmask: '' });
    expect(s).toMatchObject({ id: 'tcp-10_0_0_1-80', type: 'tcp', scheduler: 'wlc', netmask: '' });
    const srv = ServerInput.parse({ host: '10.0.0.5', port: 80, forwarder: '', weight: 0, upper_threshold: 0, lower_threshold: 0 });
    expect(srv).toMatchObject({ forwarder: 'g', weight: 0 });
  });
  it('a zero weight stays 0 (no traffic); an absent one is 1', () => {
    expect(ServerInput.parse({ host: '10.0.0.5', port: 80, weight: 0 }).weight).toBe(0);
    expect(ServerInput.parse({ host: '10.0.0.5', port: 80 }).weight).toBe(1);
  });
  it('other strings are still refused', () => {
    expect(ServiceInput.safeParse({ host: '10.0.0.1', port: 80, scheduler: ' ' }).success).toBe(false);
    expect(ServiceInput.safeParse({ host: '10.0.0.1', port: 80, type: 'sctp' }).success).toBe(false);
    expect(ServerInput.safeParse({ host: '10.0.0.5', port: 80, forwarder: 'x' }).success).toBe(false);
  });
});
