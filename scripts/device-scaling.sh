#!/usr/bin/env bash
# The per-core scaling run of issue 16, unattended and in one go, for the device machine (16
# CPUs, no iproute2, no registry) when a session is lent one: bench/harness.py's four variants
# (the AF_XDP ceiling, xlb DSR, xlb SNAT, nftables) with --queues K for each K, one
# load-balancer core per queue, then a table of delivered rates against K = 1.
#
#   here:   bash scripts/device-bundle.sh           # builds and collects .device/
#   there:  the device tool's run, command `bash scripts/device-scaling.sh`, carry
#           [".device"], timeout_s 600. K defaults to 1 2 4 8; give others as arguments.
#   again:  bash scripts/device-scaling.sh --table DIR   # the table from DIR's q<K>.json
#
# Writes to $OUT (the device tool's folder that comes back; target/device-scaling here):
# scaling.md (the table, rewritten after every K, so a run cut short still has one),
# scaling.log (everything said) and q<K>.json (each K's results.json). Stops at the first
# check that fails, saying which, so that a machine that cannot build the lab (network
# namespaces, veth, `ip netns exec`) costs seconds, not the whole lease; a machine without
# AF_XDP shows as failed variants in the table. Every K gets its share of DEVICE_BUDGET_S
# (570 s: the tool's 600 s less a margin) and is stopped at it, keeping what it measured.
# Exit status: 0 when every K has results, 2 when some have, 1 when none has.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD

# The table of the q<K>.json in directory $1, for the K that follow; its exit status says
# whether every K (0), some (2) or none (1) had a variant that ran.
table() {
  python3 - "$@" <<'PY'
import json, os, sys
out, ks = sys.argv[1], [int(k) for k in sys.argv[2:]]
names = ("ceiling", "xlb-dsr", "xlb-snat", "nftables")
rows, errors = {}, []
for k in ks:
    try:
        with open(os.path.join(out, f"q{k}.json")) as f:
            r = json.load(f)
    except (OSError, ValueError):
        continue
    rows[k] = {v["variant"]: v for v in r.get("variants", [])}
    for v in r.get("variants", []):
        if v.get("status") != "ok":
            errors.append(f"K = {k}, {v.get('variant')}: {str(v.get('error', 'failed'))[:160]}")
    if r.get("interrupted"):
        errors.append(f"K = {k}: stopped at its time limit; the variants missing from it did not run")
def ok(k, n):
    v = rows.get(k, {}).get(n)
    return v if v and v.get("status") == "ok" else None
print("| K | " + " | ".join(f"{n}: delivered Mpps (x K=1; x/K)" for n in names) +
      " | xlb-dsr: sent Mpps, share delivered | LB cores busy, xlb-dsr |")
print("| ---: | " + " | ".join("---" for _ in names) + " | --- | ---: |")
for k in ks:
    cells = []
    for n in names:
        v = ok(k, n)
        if not v:
            cells.append("failed" if k in rows and n in rows[k] else "not run")
            continue
        d, b = v["delivered_pps"], (ok(1, n) or {}).get("delivered_pps")
        cells.append(f"{d / 1e6:.3f}" + (f" ({d / b:.2f}; {d / b / k:.2f})" if b else ""))
    dsr = ok(k, "xlb-dsr")
    sent = f"{dsr['sent_pps'] / 1e6:.3f}, {1 - dsr['loss']:.1%}" if dsr and dsr.get("loss") is not None else ""
    busy = f"{100 * dsr['cpu']['lb_cores_busy']:.0f}%" if dsr else ""
    print(f"| {k} | " + " | ".join(cells) + f" | {sent} | {busy} |")
print()
print("x K=1: delivered against the same variant at K = 1; x/K: that over K (per-core scaling, 1.0 is linear). "
      "Where the LB cores are not busy all the time, the generator and sinks (on the other CPUs) set the rate.")
for e in errors:
    print(f"- {e}")
have = [k for k in ks if any(ok(k, n) for n in names)]
sys.exit(0 if len(have) == len(ks) else 2 if have else 1)
PY
}

if [ "${1:-}" = --table ]; then
  [ $# -ge 2 ] || { echo "usage: $0 --table DIR [K ...]" >&2; exit 2; }
  dir=$2
  shift 2
  ks=("$@")
  if [ ${#ks[@]} -eq 0 ]; then
    mapfile -t ks < <(find "$dir" -maxdepth 1 -name 'q*.json' -printf '%f\n' | sed 's/^q//; s/\.json$//' | sort -n)
  fi
  table "$dir" "${ks[@]}"
  exit
fi

out=${OUT:-$root/target/device-scaling}
mkdir -p "$out"
# A run here starts clean: no q<K>.json of an earlier run stands in for one that failed.
rm -f "$out"/q*.json "$out/scaling.md" "$out/scaling.log"
exec > >(tee -a "$out/scaling.log") 2>&1
logger=$!
# Each K's whole output directory stays out of $OUT (only two folders down come back).
runs=$root/target/device-scaling-runs

finish() {
  local rc=$1
  echo "device-scaling: done $(date -u '+%T'), exit $rc"
  # Let tee write the last lines before $OUT is collected.
  exec >&- 2>&-
  wait "$logger" 2>/dev/null
  exit "$rc"
}

fail() {
  echo "device-scaling: $*"
  finish 1
}

[ -d .device/path ] || fail ".device/ is missing: run scripts/device-bundle.sh here, then carry .device"
export PATH="$root/.device/path:$PATH" XLB_BIN=$root/.device/run/xlb PKTGEN_BIN=$root/.device/run/pktgen
export PYTHONUNBUFFERED=1

queues=("$@")
[ ${#queues[@]} -gt 0 ] || queues=(1 2 4 8)
ncpu=$(nproc)
echo "device-scaling: $(date -u '+%F %T') UTC, kernel $(uname -r), $ncpu CPUs, $(python3 --version 2>&1), K = ${queues[*]}"
sed 's/^/device-scaling: build: /' .device/BUILD 2>/dev/null || echo "device-scaling: .device/BUILD is missing: which build this is, is unknown"
[ "$(id -u)" -eq 0 ] || fail "needs root (network namespaces, XDP, AF_XDP)"
command -v python3 >/dev/null || fail "no python3 on this machine"
[ ${#queues[@]} -le 6 ] || fail "at most 6 K in one run: the device tool brings back at most 8 files"
for k in "${queues[@]}"; do
  [[ $k =~ ^[1-9][0-9]*$ ]] || fail "K must be a positive number of queues, not '$k'"
  if [ "$k" -ge "$ncpu" ]; then
    echo "device-scaling: K = $k with $ncpu CPUs: the load balancer shares its CPUs with the generator and sinks"
  elif [ $((2 * k)) -gt "$ncpu" ]; then
    echo "device-scaling: K = $k with $ncpu CPUs: the generator and sinks get fewer than K CPUs"
  fi
done

# What the lab needs, checked first: the carried tools start, a namespace and a veth pair can
# be made, `ip netns exec` works (it remounts /sys), and the BPF filesystem is there for XDP.
ip -V >/dev/null 2>&1 || fail "the carried ip does not start: $(ip -V 2>&1)"
"$XLB_BIN" --version >/dev/null 2>&1 || fail "the carried xlb does not start: $("$XLB_BIN" --version 2>&1)"
mountpoint -q /sys/fs/bpf 2>/dev/null || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || echo "device-scaling: /sys/fs/bpf is not mounted and could not be"
probe=xl-devprobe
ip netns del "$probe" 2>/dev/null
ip netns add "$probe" || fail "cannot make a network namespace"
why=
if ! ip -n "$probe" link add probe0 type veth peer name probe1; then
  why="cannot make a veth pair"
elif ! ip netns exec "$probe" true; then
  why="ip netns exec fails (it remounts /sys in the namespace)"
fi
ip netns del "$probe"
[ -z "$why" ] || fail "$why"
echo "device-scaling: network namespaces, veth and ip netns exec work"

budget=${DEVICE_BUDGET_S:-570}
deadline=$((SECONDS + budget))
for i in "${!queues[@]}"; do
  k=${queues[$i]}
  # This K's share of what is left; the harness stops at it (SIGINT), keeping what finished.
  left=$((deadline - SECONDS))
  share=$((left / (${#queues[@]} - i) - 20))
  if [ "$share" -lt 40 ]; then
    echo "device-scaling: K = $k skipped: ${left} s left of ${budget} s"
    continue
  fi
  echo "device-scaling: K = $k: $(date -u '+%T'), at most ${share} s"
  dir=$runs/q$k
  rm -rf "$dir"
  # About 45 s a run on 2 CPUs (31 s with 5 s per variant).
  timeout -k 15 -s INT "$share" python3 bench/harness.py --queues "$k" --only variants --duration 8 --out "$dir"
  rc=$?
  found=$(find "$dir" -mindepth 2 -maxdepth 2 -name results.json 2>/dev/null | head -1)
  if [ -n "$found" ]; then
    cp "$found" "$out/q$k.json"
  else
    echo "device-scaling: K = $k left no results (harness exit $rc$([ $rc -eq 124 ] && echo ': timed out'))"
  fi
  {
    echo "Per-core scaling, $(date -u '+%F') on $ncpu CPUs ($(uname -r)); build: $(head -1 .device/BUILD 2>/dev/null || echo unknown)."
    echo
    table "$out" "${queues[@]}"
  } > "$out/scaling.md"
done

cat "$out/scaling.md"
table "$out" "${queues[@]}" >/dev/null
finish $?
