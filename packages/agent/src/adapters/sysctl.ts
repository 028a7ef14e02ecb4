/**
 * The `sysctl` adapter: the only module that builds `sysctl` argv. Keys use
 * the slash form, since an interface name may hold dots; names are checked
 * before they reach a command. sysctl has no `-n NS`: a namespace goes
 * through the runner's `ip netns exec`.
 */
import { isInterfaceName } from '@switchyard/shared';

/**
 * Settings for proxy ARP on a bridge; on, replies come at once rather than
 * after the random `proxy_delay` (up to 0.8 s) the kernel adds to proxied
 * ARP replies.
 */
export function proxyArpArgs(dev: string, on: boolean): string[] {
  if (!isInterfaceName(dev)) throw new Error(`not an interface name: ${JSON.stringify(dev)}`);
  return [`net/ipv4/conf/${dev}/proxy_arp=${on ? 1 : 0}`, ...(on ? [`net/ipv4/neigh/${dev}/proxy_delay=0`] : [])];
}

/** argv of one `sysctl -q -w` writing several settings. */
export function sysctlWriteArgs(settings: string[]): string[] {
  return ['-q', '-w', ...settings];
}
