#!/usr/bin/env bash
# Installs what xlb's build, demo and tests need, and only what is missing. Safe to run
# again and again; used by `make demo`, `make test` and .ci/run.
set -euo pipefail

# Debian packages, by what needs them.
packages=(
  # The BPF toolchain for libbpf-sys and libxdp-sys: clang, llvm, libelf, zlib, m4, pkg-config.
  clang llvm m4 libelf-dev zlib1g-dev pkg-config make
  # libxdp-sys builds libxdp with xdp-tools' configure, which looks for gcc by that name
  # (clang does not pull it in) and stops with "pcap support: missing - this is required"
  # without libpcap's headers and library. That is a compile-and-link check only: neither
  # libxdp nor xlb links libpcap.
  gcc libpcap-dev
  # The netns lab: iproute2 (ip, ss), procps (sysctl, and the kill the tests run), ethtool,
  # and nftables (on the lab's bridge it cuts links between nodes in the failover tests).
  iproute2 procps ethtool nftables
  # The tools the demo and the tests send and watch traffic with.
  iputils-ping arping tcpdump python3 curl
  # Debian's CA bundle, for HTTPS: cargo fetching from crates.io (scripts/fuzz.sh resolves
  # libfuzzer-sys there on its first run), curl, Go's module proxy. A minimal Debian lacks
  # it (curl only recommends it); scripts/fresh-root.sh found the fuzz build failing there.
  ca-certificates
  # The test API server's certificates (scripts/k8s/apiserver.sh; it installs openssl by
  # itself too when it runs as root).
  openssl
  # `make lint` runs shellcheck over the shell scripts.
  shellcheck
  # scripts/pathcost.sh counts the datapath's instructions per packet under callgrind
  # (callgrind_annotate, a Perl script, comes in the same package).
  valgrind
  # BGP, BFD and ECMP (issue 18): FRR is the routing daemon xlb starts and drives on each
  # node (zebra, bgpd, bfdd, vtysh) and the router of the lab's BGP tests; frr-pythontools
  # brings frr-reload.py, which applies a changed configuration without resetting sessions.
  frr frr-pythontools
  # BIRD 2, the other router the BGP tests run xlb's nodes against (interop).
  bird2
)
# `setup.sh bench` adds what bench/harness.py uses beyond the lab's tools: trafgen
# (netsniff-ng), the other generator it compares; taskset (util-linux, normally
# there already) to pin the generator, the sinks and the load balancer to their cores.
if [ "${1:-}" = bench ]; then
  packages+=(netsniff-ng util-linux)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: these packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Rust toolchain comes with the machine (rustup); make sure its components are there.
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    if command -v rustup >/dev/null 2>&1; then rustup component add "$c" >/dev/null 2>&1 || true; fi
    cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || { echo "setup: cargo component $c missing" >&2; exit 1; }
  fi
done

# The lab needs a bpf filesystem for libbpf, where one is not mounted yet.
if [ "$(id -u)" -eq 0 ] && ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
  mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
fi
echo "setup: ok"
