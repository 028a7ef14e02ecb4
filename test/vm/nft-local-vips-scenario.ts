/**
 * What nft-local-vips-guest.ts (in the VM) and nft-local-vips.test.ts (on the
 * host) share. Only data and types: the test must never import the guest
 * itself, which would run its phases on the host.
 */
export const NFT_VM = {
  vip: '10.200.0.100',
  table: 'synftvm',
  device: 'sy-nft0',
  backends: [
    { ns: 'sy-b1', address: '10.211.1.2', name: 'backend-1' },
    { ns: 'sy-b2', address: '10.211.2.2', name: 'backend-2' },
  ],
  port: 8080,
} as const;

export interface NftVmPhase {
  name: string;
  failed: boolean;
  reports: string[];
  /** One entry per connection: the backend's answer, or `ERR <curl's message>`. */
  answers: string[];
  addresses: string[];
  deviceKind?: string;
}

export interface NftVmResult {
  phases: NftVmPhase[];
  /** Whether the device still exists after flush(). */
  deviceAfterFlush: boolean;
}

