#!/usr/bin/env bash
# Proves that a fresh Debian machine builds xlb with what the repository says to install, by
# building in minimal Debian roots (debootstrap --variant=minbase) made from Debian's packages:
#
#   setup          a root of this machine's Debian release: `bash scripts/setup.sh`, then
#                  `cargo build --release --workspace`, `make lint` and a short fuzz run
#                  (FUZZ_SECONDS=10 scripts/fuzz.sh: the fuzz build's C++ compiler is clang's);
#   containerfile  a root of the Containerfile's build stage (the Debian release of its FROM):
#                  exactly the packages its `apt-get install` names, then its cargo build; and a
#                  root of the runtime stage, with only the packages that stage names, that must
#                  run the binary built (`xlb --version`, `xlb check` of examples/demo.yaml).
#
#   scripts/fresh-root.sh                    # both (root only; about 35 minutes on 2 cores)
#   scripts/fresh-root.sh containerfile      # one
#   FRESH_BUILD_ONLY=1 scripts/fresh-root.sh setup   # setup mode without lint and fuzz
#
# Not part of `make test`: it takes long and needs a Debian mirror (FRESH_MIRROR, default
# http://deb.debian.org/debian; security updates from FRESH_SECURITY). Rust is not a Debian
# package: this machine's rustup (~/.rustup, ~/.cargo/bin) is bind-mounted read-only into each
# root, and the registry's index and downloaded crates (~/.cargo/registry/{index,cache},
# read-write) so that crates are not downloaded again; each root extracts and builds them
# itself. The toolchain used is printed (the image's own is that of its FROM, rust:1.89).
# The runtime root is minbase, close to debian:bookworm-slim. The sources are a clean clone
# of this repository's HEAD: commit what is to be proved.
#
# debootstrap is installed when missing and purged again at the end. Roots are made under
# FRESH_DIR (default /var/tmp/xlb-fresh), unmounted and deleted at the end, even on failure
# (FRESH_KEEP=1 keeps them, unmounted). Each step's time and result is printed as a table.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "fresh-root: needs root (debootstrap, chroot, mounts)" >&2
  exit 1
fi
modes=("$@")
[ ${#modes[@]} -gt 0 ] || modes=(setup containerfile)
for m in "${modes[@]}"; do
  case $m in
    setup | containerfile) ;;
    *) echo "fresh-root: no mode $m (setup, containerfile)" >&2; exit 2 ;;
  esac
done

MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
SECURITY=${FRESH_SECURITY:-http://deb.debian.org/debian-security}
BASE=${FRESH_DIR:-/var/tmp/xlb-fresh}
host_release=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
rust_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
for d in "$rust_home" "$cargo_home/bin" "$cargo_home/registry/index" "$cargo_home/registry/cache"; do
  [ -d "$d" ] || { echo "fresh-root: $d is missing (install Rust with rustup first)" >&2; exit 1; }
done

# The Containerfile's stages, read from the file itself: the build stage's Debian release
# (the tag of `FROM rust:X-RELEASE AS build`), each stage's packages (the words after
# --no-install-recommends up to `&&`), the build stage's cargo command.
stage() { # stage N: the lines of the Nth stage, continuation lines joined
  awk -v n="$1" '/^FROM /{ i++ } i == n' Containerfile | sed -e ':a' -e '/\\$/N; s/\\\n//; ta'
}
apt_list() { sed -n 's/.*apt-get install .*--no-install-recommends\([^&]*\)&&.*/\1/p' | xargs; }
cf_release=$(stage 1 | sed -n 's/^FROM [^ ]*:[^ ]*-\([a-z]*\) AS build$/\1/p')
cf_build_pkgs=$(stage 1 | apt_list)
cf_runtime_pkgs=$(stage 2 | apt_list)
cf_cargo=$(stage 1 | grep -o 'cargo build[^&]*' | sed 's/ *$//')

results=()
record() { results+=("$(printf '%-56s %6ss  %s' "$1" "$2" "$3")"); }
timed() { # timed LABEL COMMAND...: runs it, records its time and result; fails as it does
  local label=$1 start rc=0
  shift
  start=$(date +%s)
  echo "== fresh-root: $label"
  "$@" || rc=$?
  record "$label" "$(($(date +%s) - start))" "$([ "$rc" -eq 0 ] && echo ok || echo "FAILED (exit $rc)")"
  return "$rc"
}

installed_debootstrap=
roots=()
unmount_all() { # every mount under the root, deepest first
  local root=$1 m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m"
  done < <(awk -v r="$root/" 'index($2 "/", r) == 1 { print $2 }' /proc/self/mounts | sort -r)
}
cleanup() {
  local r
  for r in "${roots[@]}"; do
    unmount_all "$r"
    if awk -v r="$r/" 'index($2 "/", r) == 1 { found = 1 } END { exit !found }' /proc/self/mounts; then
      echo "fresh-root: $r still has mounts; not deleting it" >&2
    elif [ -z "${FRESH_KEEP:-}" ]; then
      rm -rf --one-file-system "$r"
    fi
  done
  rmdir "$BASE" 2>/dev/null || true
  if [ -n "$installed_debootstrap" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq debootstrap >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get autoremove -y -qq >/dev/null
    echo "fresh-root: debootstrap purged again"
  fi
  echo
  echo "fresh-root: what ran"
  printf '  %-56s %7s  %s\n' step time result
  printf '  %s\n' "${results[@]}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! command -v debootstrap >/dev/null; then
  echo "fresh-root: installing debootstrap (purged again at the end)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  installed_debootstrap=1
fi

# make_root NAME RELEASE: a minbase root with the release's updates and security
# sources, DNS, no daemons started by packages, and /proc, /sys, /dev mounted.
make_root() {
  local root=$BASE/$1 release=$2
  if [ -e "$root" ]; then
    unmount_all "$root"
    rm -rf --one-file-system "$root"
  fi
  mkdir -p "$BASE"
  roots+=("$root")
  timed "$1: debootstrap minbase $release" quiet debootstrap --variant=minbase "$release" "$root" "$MIRROR"
  cat >"$root/etc/apt/sources.list" <<EOF
deb $MIRROR $release main
deb $MIRROR $release-updates main
deb $SECURITY $release-security main
EOF
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  # The machine's own CAs (a proxy that re-signs TLS, as on the machines this was first run
  # on), for ca-certificates to add to the root's bundle when it is installed.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    mkdir -p "$root/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  fi
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod +x "$root/usr/sbin/policy-rc.d"
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount --rbind /dev "$root/dev"
  mount --make-rslave "$root/dev"
}

# with_rust ROOT: this machine's rustup toolchain in the root, read-only, and the registry's
# index and downloaded crates. Not its extracted sources (registry/src): libxdp-sys builds
# libxdp inside them, and the config.mk and libxdp.a a build here left there would let the
# root's build skip xdp-tools' configure and the packages it checks for.
with_rust() {
  local root=$1 d
  for d in .rustup .cargo/bin .cargo/registry/index .cargo/registry/cache; do mkdir -p "$root/root/$d"; done
  mount --bind "$rust_home" "$root/root/.rustup"
  mount -o remount,bind,ro "$root/root/.rustup"
  mount --bind "$cargo_home/bin" "$root/root/.cargo/bin"
  mount -o remount,bind,ro "$root/root/.cargo/bin"
  mount --bind "$cargo_home/registry/index" "$root/root/.cargo/registry/index"
  mount --bind "$cargo_home/registry/cache" "$root/root/.cargo/registry/cache"
}

# in_root ROOT COMMAND: bash as root in the root's clone of the sources, with a clean
# environment (the toolchain on PATH, FUZZ_SECONDS=10, CARGO_BUILD_JOBS passed on if set).
in_root() {
  local envs=(HOME=/root LANG=C.UTF-8 TERM=dumb FUZZ_SECONDS=10
    PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin)
  [ -z "${CARGO_BUILD_JOBS:-}" ] || envs+=("CARGO_BUILD_JOBS=$CARGO_BUILD_JOBS")
  chroot "$1" /usr/bin/env -i "${envs[@]}" bash -c "cd /src/xlb && $2"
}

quiet() { "$@" >/dev/null; }

clone_into() {
  mkdir -p "$1/src"
  git clone -q "$repo" "$1/src/xlb"
  echo "fresh-root: sources at $(git -C "$1/src/xlb" log -1 --format='%h %s')"
}

for m in "${modes[@]}"; do
  case $m in
    setup)
      root=$BASE/setup
      make_root setup "$host_release"
      with_rust "$root"
      clone_into "$root"
      in_root "$root" 'rustc -V; cargo -V'
      timed "setup: bash scripts/setup.sh" in_root "$root" 'bash scripts/setup.sh'
      timed "setup: cargo build --release --workspace" in_root "$root" 'cargo build --release --workspace'
      if [ -z "${FRESH_BUILD_ONLY:-}" ]; then
        timed "setup: make lint" in_root "$root" 'make lint'
        timed "setup: FUZZ_SECONDS=10 scripts/fuzz.sh" in_root "$root" 'bash scripts/fuzz.sh'
      fi
      ;;
    containerfile)
      echo "fresh-root: Containerfile build stage: $cf_release; packages: $cf_build_pkgs"
      echo "fresh-root: its build: $cf_cargo; runtime packages: $cf_runtime_pkgs"
      if [ -z "$cf_release" ] || [ -z "$cf_build_pkgs" ] || [ -z "$cf_cargo" ] || [ -z "$cf_runtime_pkgs" ]; then
        echo "fresh-root: cannot read the stages of Containerfile" >&2
        exit 1
      fi
      root=$BASE/build
      make_root build "$cf_release"
      with_rust "$root"
      clone_into "$root"
      in_root "$root" 'rustc -V; cargo -V'
      timed "build: apt-get install (the stage's list)" in_root "$root" \
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $cf_build_pkgs >/dev/null"
      timed "build: $cf_cargo" in_root "$root" "$cf_cargo && install -D -m 0755 target/release/xlb /out/xlb"
      runtime=$BASE/runtime
      make_root runtime "$cf_release"
      timed "runtime: apt-get install (the stage's list)" chroot "$runtime" /usr/bin/env -i \
        PATH=/usr/sbin:/usr/bin:/sbin:/bin bash -c \
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $cf_runtime_pkgs >/dev/null"
      install -D -m 0755 "$root/out/xlb" "$runtime/usr/local/bin/xlb"
      cp "$root/src/xlb/examples/demo.yaml" "$runtime/demo.yaml"
      timed "runtime: xlb --version; xlb check" chroot "$runtime" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin \
        bash -c 'xlb --version && xlb check --config /demo.yaml'
      ;;
  esac
done
echo "fresh-root: ok: ${modes[*]}"
