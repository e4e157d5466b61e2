#!/usr/bin/env bash
# Installs what xlb's build, demo and tests need, and only what is missing. Safe to run
# again and again; used by `make demo`, `make test` and .ci/run.
set -euo pipefail

# Debian packages: the BPF toolchain (clang, llvm, libelf, zlib, m4, pkg-config for
# libbpf-sys/libxdp-sys), iproute2, ethtool and nftables for the netns lab (nftables on the
# lab's bridge cuts links between nodes in the failover tests), the tools the demo shows
# traffic with, and shellcheck for `make lint`.
packages=(clang llvm m4 libelf-dev zlib1g-dev pkg-config make iproute2 iputils-ping arping tcpdump ethtool nftables python3 curl shellcheck)
# `setup.sh bench` adds trafgen (netsniff-ng), the other generator the benchmark compares.
if [ "${1:-}" = bench ]; then
  packages+=(netsniff-ng)
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
