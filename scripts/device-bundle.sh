#!/usr/bin/env bash
# Prepares .device/, everything the per-core scaling run (scripts/device-scaling.sh) needs on
# a machine that has Linux, python3 and a shell but no Rust toolchain, no iproute2 and no
# package registry (the device machine, when a session is lent one):
#
#   .device/bin/       xlb and pktgen, release builds, stripped
#   .device/xlib/      the libraries they link that are not glibc's (libelf, libz)
#   .device/run/       xlb and pktgen with .device/xlib on their library path
#   .device/tools/     ip, ss, ethtool, nft, sysctl, taskset, ping, kill, trafgen: this
#                      machine's binaries, exactly as the lab here runs them
#   .device/lib/       every library they load, glibc and its loader included
#   .device/path/      one wrapper per tool that starts it with the carried loader and
#                      libraries, so it needs nothing from the machine it runs on
#
# Run here, as root (it installs the bench's packages if missing): bash scripts/device-bundle.sh
# Then, with the device tool: run `bash scripts/device-scaling.sh` with carry [".device"].
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${HOME:-/root}/.cargo/bin:$PATH"

bash scripts/setup.sh bench >/dev/null
cargo build --release -q --workspace
target=${CARGO_TARGET_DIR:-target}

out=.device
rm -rf "$out"
mkdir -p "$out"/{bin,xlib,run,tools,lib,path}

# The libraries a binary loads, by path (ldd's "name => path" and the loader's own line).
libs_of() {
  ldd "$1" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
}

for b in xlb pktgen; do
  strip -o "$out/bin/$b" "$target/release/$b"
  for l in $(libs_of "$target/release/$b"); do
    case $(basename "$l") in
      # glibc and the compiler's runtime come from the machine it runs on (any glibc at least
      # as new as this one's); the rest travels.
      ld-linux*|libc.so*|libm.so*|libgcc_s.so*|libpthread.so*|libdl.so*|librt.so*) ;;
      *) cp -L "$l" "$out/xlib/" ;;
    esac
  done
  cat > "$out/run/$b" <<WRAP
#!/bin/sh
# $b as built by scripts/device-bundle.sh, with the libraries it carried.
d=\$(cd "\$(dirname "\$0")/.." && pwd)
LD_LIBRARY_PATH="\$d/xlib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$d/bin/$b" "\$@"
WRAP
  chmod +x "$out/run/$b"
done

loader=/lib64/ld-linux-x86-64.so.2
[ -e "$loader" ] || { echo "device-bundle: no $loader on this machine" >&2; exit 1; }
cp -L "$loader" "$out/lib/"
for t in ip ss ethtool nft sysctl taskset ping kill trafgen; do
  p=$(type -P "$t") || { echo "device-bundle: $t is not installed (scripts/setup.sh bench installs it)" >&2; exit 1; }
  cp -L "$p" "$out/tools/$t"
  for l in $(libs_of "$p"); do
    [ -e "$out/lib/$(basename "$l")" ] || cp -L "$l" "$out/lib/"
  done
  cat > "$out/path/$t" <<WRAP
#!/bin/sh
# $t from the machine that ran scripts/device-bundle.sh, on the loader and libraries it carried.
d=\$(cd "\$(dirname "\$0")/.." && pwd)
exec "\$d/lib/$(basename "$loader")" --library-path "\$d/lib" "\$d/tools/$t" "\$@"
WRAP
  chmod +x "$out/path/$t"
done

# Each tool must load from the bundle alone: every library the carried loader resolves lies
# in .device/lib (a library found on this machine instead would be missing there). xlb and
# pktgen may take only glibc and the compiler's runtime from the machine they run on.
for t in "$out"/tools/*; do
  outside=$("$out/lib/$(basename "$loader")" --library-path "$out/lib" --list "$t" |
    awk '$2 == "=>" && $3 ~ /^\// && index($3, lib) != 1 { print $1 }' lib="$(cd "$out/lib" && pwd)/")
  [ -z "$outside" ] || { echo "device-bundle: $(basename "$t") loads from outside the bundle: $outside" >&2; exit 1; }
done
for b in xlb pktgen; do
  outside=$(LD_LIBRARY_PATH="$out/xlib" ldd "$out/bin/$b" |
    awk '$2 == "=>" && $3 ~ /^\// && $3 !~ /\.device\/xlib\// { print $1 }' |
    grep -Ev '^(libc|libm|libgcc_s|libpthread|libdl|librt)\.so' || true)
  [ -z "$outside" ] || { echo "device-bundle: $b loads from outside the bundle: $outside" >&2; exit 1; }
done
"$out/path/ip" -V >/dev/null
"$out/run/xlb" --version >/dev/null
"$out/run/pktgen" --help >/dev/null

# What was built, for the run's log and table: the device copy has no git and no rustc.
{
  echo "commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!.device' || echo ' (with uncommitted changes)')"
  echo "bundled $(date -u '+%F %T') UTC on $(uname -r)"
  rustc -V
  echo "glibc $(ldd --version | head -1 | awk '{ print $NF }') (xlb and pktgen need this or newer)"
} > "$out/BUILD"

echo "device-bundle: $(du -sh "$out" | cut -f1) in $out ($(find "$out" -type f | wc -l) files); carry it with the device tool: carry [\".device\"]"
