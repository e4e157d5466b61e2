#!/usr/bin/env bash
# The per-core scaling run of issue 16, unattended and in one go, for the device machine (16
# CPUs, no iproute2, no registry) when a session is lent one: bench/harness.py's four variants
# (the AF_XDP ceiling, xlb DSR, xlb SNAT, nftables) with --queues K for each K, one
# load-balancer core per queue, then a table of delivered rates against K = 1.
#
#   here:   bash scripts/device-bundle.sh           # builds and collects .device/
#   there:  the device tool's run, command `bash scripts/device-scaling.sh`, carry
#           [".device"], timeout_s 600. K defaults to 1 2 4 8; give others as arguments.
#
# Writes to $OUT (the device tool's folder that comes back; target/device-scaling here):
# scaling.md (the table), scaling.log (everything said), q<K>.json (each run's results.json).
# Stops at the first check that fails, saying which, so that a machine that cannot run the lab
# (no network namespaces, veth or XDP) costs seconds, not the whole lease.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
out=${OUT:-$root/target/device-scaling}
mkdir -p "$out"
exec > >(tee -a "$out/scaling.log") 2>&1
# Each run's whole output directory stays out of $OUT (only two folders down come back).
runs=$root/target/device-scaling-runs
mkdir -p "$runs"

fail() {
  echo "device-scaling: $*"
  exit 1
}

[ -d .device/path ] || fail ".device/ is missing: run scripts/device-bundle.sh here, then carry .device"
export PATH="$root/.device/path:$PATH" XLB_BIN=$root/.device/run/xlb PKTGEN_BIN=$root/.device/run/pktgen
export PYTHONUNBUFFERED=1

queues=("$@")
[ ${#queues[@]} -gt 0 ] || queues=(1 2 4 8)
ncpu=$(nproc)
echo "device-scaling: $(date -u '+%F %T') UTC, kernel $(uname -r), $ncpu CPUs, $(python3 --version 2>&1), K = ${queues[*]}"
[ "$(id -u)" -eq 0 ] || fail "needs root (network namespaces, XDP, AF_XDP)"
command -v python3 >/dev/null || fail "no python3 on this machine"
for k in "${queues[@]}"; do
  [ "$k" -ge 1 ] 2>/dev/null || fail "K must be a positive number of queues, not '$k'"
  [ $((2 * k)) -le "$ncpu" ] || echo "device-scaling: K = $k with $ncpu CPUs: the load balancer shares its CPUs with the generator (the harness says so)"
done

# What the lab needs, checked first: the carried tools start, a namespace and a veth pair can
# be made, and the BPF filesystem is there for XDP.
ip -V >/dev/null 2>&1 || fail "the carried ip does not start: $(ip -V 2>&1)"
"$XLB_BIN" --version >/dev/null 2>&1 || fail "the carried xlb does not start: $("$XLB_BIN" --version 2>&1)"
mountpoint -q /sys/fs/bpf 2>/dev/null || mount -t bpf bpf /sys/fs/bpf 2>/dev/null || echo "device-scaling: /sys/fs/bpf is not mounted and could not be"
probe=xl-devprobe
ip netns del "$probe" 2>/dev/null
ip netns add "$probe" || fail "cannot make a network namespace"
if ! ip -n "$probe" link add probe0 type veth peer name probe1; then
  ip netns del "$probe"
  fail "cannot make a veth pair"
fi
ip netns del "$probe"
echo "device-scaling: network namespaces and veth work"

for k in "${queues[@]}"; do
  echo "device-scaling: K = $k: $(date -u '+%T')"
  before=$(ls "$runs")
  # About 45 s a run on 2 CPUs (31 s with 5 s per variant); the limit keeps four of them
  # inside one 10-minute call.
  timeout -s INT 135 python3 bench/harness.py --queues "$k" --only variants --duration 8 --out "$runs"
  rc=$?
  dir=$(comm -13 <(echo "$before") <(ls "$runs") | tail -1)
  if [ -n "$dir" ] && [ -f "$runs/$dir/results.json" ]; then
    cp "$runs/$dir/results.json" "$out/q$k.json"
  else
    echo "device-scaling: K = $k left no results (harness exit $rc)"
  fi
done

python3 - "$out" "${queues[@]}" <<'PY' | tee "$out/scaling.md"
import json, os, sys
out, ks = sys.argv[1], [int(k) for k in sys.argv[2:]]
names = ("ceiling", "xlb-dsr", "xlb-snat", "nftables")
rows = {}
for k in ks:
    try:
        with open(os.path.join(out, f"q{k}.json")) as f:
            r = json.load(f)
    except (OSError, ValueError):
        continue
    rows[k] = {v["variant"]: v for v in r.get("variants", []) if v.get("status") == "ok"}
print("| K | " + " | ".join(f"{n} delivered Mpps (x K=1; x/K)" for n in names) + " | LB cores busy, xlb-dsr |")
print("| ---: | " + " | ".join("---" for _ in names) + " | ---: |")
base = rows.get(1, {})
for k in ks:
    if k not in rows:
        print(f"| {k} | " + " | ".join("failed" for _ in names) + " | |")
        continue
    cells = []
    for n in names:
        v = rows[k].get(n)
        if not v:
            cells.append("failed")
            continue
        d = v["delivered_pps"]
        b = base.get(n, {}).get("delivered_pps")
        cells.append(f"{d / 1e6:.3f}" + (f" ({d / b:.2f}; {d / b / k:.2f})" if b else ""))
    dsr = rows[k].get("xlb-dsr")
    busy = f"{100 * dsr['cpu']['lb_cores_busy']:.0f}%" if dsr else ""
    print(f"| {k} | " + " | ".join(cells) + f" | {busy} |")
print()
print("x K=1: delivered against the same variant at K = 1; x/K: that over K (per-core scaling, 1.0 is linear).")
print("Where the LB cores are not busy all the time, the generator and sinks (on the other CPUs) set the rate.")
PY
echo "device-scaling: done $(date -u '+%T')"
