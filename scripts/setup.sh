#!/usr/bin/env bash
# The install step behind `npm start` and `npm test`: node dependencies, and
# the Debian packages Switchyard runs with. As root it installs what is
# missing; otherwise it says precisely what to install.
set -euo pipefail
cd "$(dirname "$0")/.."

need_node_major=20
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt "$need_node_major" ]; then
  echo "switchyard: Node.js >= $need_node_major is required (found $(node --version))" >&2
  exit 1
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "switchyard: installing node dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi

# command → Debian package. etcd-server is needed by `up` and the tests; the
# rest by the agent's dataplanes and the kernel/DNS tests (openssl: the etcd TLS test;
# python3: the topology role's netns helper, which reads and changes container namespaces).
declare -A pkgs=(
  [etcd]=etcd-server
  [nft]=nftables
  [conntrack]=conntrack
  [ip]=iproute2
  [dig]=bind9-dnsutils
  [ping]=iputils-ping
  [openssl]=openssl
  [python3]=python3
)
missing=()
for cmd in "${!pkgs[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v "$cmd" >/dev/null 2>&1 || missing+=("${pkgs[$cmd]}")
done
# ipvsadm only matters where the kernel has IPVS; install it when we can.
command -v ipvsadm >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v ipvsadm >/dev/null 2>&1 || missing+=(ipvsadm)

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "switchyard: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "switchyard: missing Debian packages: ${missing[*]}" >&2
    echo "switchyard: install them with: sudo apt-get install ${missing[*]}" >&2
    # etcd is indispensable; the others only limit what can run.
    command -v etcd >/dev/null 2>&1 || exit 1
  fi
fi
