#!/usr/bin/env bash
# The demo of xlb on the netns lab, from the example config (examples/demo.yaml): xlb probes
# for its VIPs, announces them, answers ARP/NDP from an AF_XDP socket, load-balances TCP to
# three backends by direct server return and by source NAT (IPv4 and IPv6), refuses a VIP
# another host already holds, shows what it does through its CLI and /metrics, drains a
# backend on a config reload, takes a dead backend out on its health check, and leaves the
# interface as it found it. Everything happens in network namespaces this script makes and
# removes.
set -euo pipefail
cd "$(dirname "$0")/.."

XLB=${XLB:-${CARGO_TARGET_DIR:-target}/release/xlb}
P=xl-demo-$$
SW=$P-switch CL=$P-client LB=$P-lb SQ=$P-squatter
BACKENDS="$P-backend1 $P-backend2 $P-backend3"
WORK=$(mktemp -d /tmp/xlb-demo.XXXXXX)
SOCK=$WORK/xlb.sock
# xlb's flow and SNAT tables live here (tmpfs), where a restarted xlb would take them over.
STATE=/dev/shm/xlb-demo.$$
XLB_PID=

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cli() { "$XLB" "$@" --socket "$SOCK"; }
cleanup() {
  if [ -n "$XLB_PID" ]; then kill -9 "$XLB_PID" 2>/dev/null || true; fi
  for ns in $BACKENDS $SQ $LB $CL $SW; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK" "$STATE"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || { echo "demo: needs root (network namespaces, XDP, AF_XDP)" >&2; exit 1; }
[ -x "$XLB" ] || { echo "demo: $XLB not built; run 'make demo'" >&2; exit 1; }

say "Building the lab: switch (bridge), client, lb, three backends, and a squatter that already holds 10.77.0.101"
ip netns add $SW
ip -n $SW link add br0 type bridge mcast_snooping 0
ip -n $SW link set br0 up
for t in iptables ip6tables arptables; do ip netns exec $SW sysctl -qw net.bridge.bridge-nf-call-$t=0 2>/dev/null || true; done
host() { # name addresses...
  local ns=$P-$1; shift
  ip netns add "$ns"
  ip -n $SW link add "p-${ns##*-}" type veth peer name eth0 netns "$ns"
  ip -n $SW link set "p-${ns##*-}" master br0 up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.eth0.accept_dad=0
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  # Full checksums on the wire, as real NICs send them (a veth leaves them half done).
  ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null
  for a in "$@"; do
    case $a in *:*) ip -n "$ns" addr add "$a" dev eth0 nodad ;; *) ip -n "$ns" addr add "$a" dev eth0 ;; esac
  done
}
servers() { # backend number: a DSR server on :80 (VIP 10.77.0.100 on lo) and an IPv6 one on :8080
  local ns=$P-backend$1
  ip netns exec "$ns" python3 tests/support/servers.py "backend$1" 80 4 10.77.0.100 >/dev/null 2>&1 &
  disown
  ip netns exec "$ns" python3 tests/support/servers.py "backend$1" 8080 6 >/dev/null 2>&1 &
  disown
}
host client 10.77.0.1/24 fd77::1/64
host lb 10.77.0.2/24 fd77::2/64
host squatter 10.77.0.9/24 10.77.0.101/24
for i in 1 2 3; do
  host backend$i 10.77.0.1$i/24 fd77::1$i/64
  ns=$P-backend$i
  # A DSR backend: the VIP on lo, never answering ARP for it.
  ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
  ip -n "$ns" addr add 10.77.0.100/32 dev lo
  servers $i
done
LB_MAC=$(ip -n $LB link show eth0 | awk '/link\/ether/{print $2}')
SQ_MAC=$(ip -n $SQ link show eth0 | awk '/link\/ether/{print $2}')
echo "lb eth0 MAC: $LB_MAC    squatter MAC: $SQ_MAC"

say "The config (examples/demo.yaml): web (DSR), api (SNAT, VIP from the pool), web6 (IPv6, SNAT), legacy (a taken VIP)"
cp examples/demo.yaml "$WORK/xlb.yaml"
"$XLB" check --config "$WORK/xlb.yaml"

say "Starting xlb on lb/eth0: xlb run --config xlb.yaml"
ip netns exec $CL tcpdump -l -n -e -i eth0 'arp or (icmp6 and ip6[40] >= 135 and ip6[40] <= 136)' >"$WORK/wire.txt" 2>/dev/null &
sleep 1
ip netns exec $LB "$XLB" run --config "$WORK/xlb.yaml" --admin-socket "$SOCK" \
  --state-dir "$STATE" --stats-file "$WORK/stats.json" 2>"$WORK/xlb.log" &
XLB_PID=$!
for _ in $(seq 100); do
  [ "$(grep -c 'to="owned"' "$WORK/xlb.log" 2>/dev/null)" -ge 5 ] && grep -q "resolved backend=fd77::13" "$WORK/xlb.log" && break
  kill -0 $XLB_PID 2>/dev/null || { echo "xlb exited:"; cat "$WORK/xlb.log"; XLB_PID=; exit 1; }
  sleep 0.1
done
sleep 0.5
sed 's/^[0-9T:.-]*Z *//' "$WORK/xlb.log"

say "What the client saw on the wire at start-up (probes, then gratuitous ARP and NA from $LB_MAC)"
grep -m 10 "^[0-9:.]* $LB_MAC" "$WORK/wire.txt" | sed -E 's/^[0-9:.]+ //; s/, ethertype [^,]*, length [0-9]+:/:/'

say "Client: arping 10.77.0.100 (a VIP: answered by xlb from userspace)"
ip netns exec $CL arping -c 2 -w 2 -I eth0 10.77.0.100 || true

say "Client: arping 10.77.0.101 (held by the squatter: only it answers, xlb stays silent)"
ip netns exec $CL arping -c 2 -w 2 -I eth0 10.77.0.101 || true

say "Client: ping the VIPs (xlb answers echo requests itself)"
ip netns exec $CL ping -c 1 -W 1 10.77.0.100 | grep -E 'bytes from|loss'
ip netns exec $CL ping -6 -c 1 -W 1 fd77::100 | grep -E 'bytes from|loss'

API_VIP=$(cli service list -o json | python3 -c 'import json,sys; print(next(s["vip"] for s in json.load(sys.stdin)["services"] if s["name"].startswith("api/")))')
say "Client: real TCP through every service (web: DSR; api at $API_VIP: SNAT, allocated from the pool; web6: IPv6 SNAT)"
ip netns exec $CL python3 - "$API_VIP" <<'PY'
import collections, socket, sys, time
def run(what, addr, n, family=socket.AF_INET):
    counts, peers, failed, t0 = collections.Counter(), set(), 0, time.time()
    for i in range(n):
        try:
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(2)
            s.connect(addr)
            s.sendall(b"hello\n")
            name, peer = s.recv(100).decode().split()
            counts[name] += 1
            peers.add(peer)
            s.close()
        except OSError:
            failed += 1
    dt = time.time() - t0
    print(f"{what}: {sum(counts.values())} answered, {failed} failed, in {dt:.2f} s; backends saw the client as {', '.join(sorted(peers))}")
    for name, k in sorted(counts.items()):
        print(f"  {name}: {k:4d} connections ({100 * k / n:.1f}%)")
run("web  10.77.0.100:80 (DSR)", ("10.77.0.100", 80), 1000)
run(f"api  {sys.argv[1]}:8080 (SNAT, affinity by client address)", (sys.argv[1], 8080), 200)
run("web6 [fd77::100]:80 (SNAT)", ("fd77::100", 80), 300, socket.AF_INET6)
PY

say "xlb status"
cli status
say "xlb service list"
cli service list
say "xlb backend list"
cli backend list
say "xlb pool list"
cli pool list
say "xlb maglev show web"
cli maglev show web/tcp:80 | sed -n '1,8p'
say "xlb conntrack list --service web6 --limit 3"
cli conntrack list --service web6 --limit 3
say "Prometheus: curl http://127.0.0.1:9180/metrics (a few of the series)"
ip netns exec $LB curl -s http://127.0.0.1:9180/metrics \
  | grep -E '^xlb_(forwarded_packets_total|snat_reply_packets_total|backend_packets_total\{service="web/tcp:80"|conntrack_entries|batch_duration_seconds_count|vip_owned|snapshot_generation)' | sed -n '1,14p'

say "Reload: backend3 drained (weight 0) in xlb.yaml, then SIGHUP: no new flows to it, nothing cut"
python3 - "$WORK/xlb.yaml" <<'PY'
import sys
p = sys.argv[1]
t = open(p).read().replace("      - address: 10.77.0.13\n    healthCheck", "      - address: 10.77.0.13\n        weight: 0\n    healthCheck", 1)
open(p, "w").write(t)
PY
kill -HUP $XLB_PID
for _ in $(seq 50); do grep -q "config reloaded" "$WORK/xlb.log" && break; sleep 0.1; done
grep "config reloaded" "$WORK/xlb.log" | sed 's/^[0-9T:.-]*Z *//'
cli backend list | grep -E 'SERVICE|web/'
ip netns exec $CL python3 -c '
import collections, socket
c = collections.Counter()
for i in range(300):
    s = socket.create_connection(("10.77.0.100", 80), timeout=2); s.sendall(b"x\n"); c[s.recv(100).decode().split()[0]] += 1; s.close()
print("300 new connections to web:", dict(sorted(c.items())))'

say "Health: backend2's servers killed; the HTTP check (500 ms x fall 2) takes it out"
for pid in $(ip netns pids $P-backend2); do kill -9 "$pid"; done
for _ in $(seq 40); do cli backend list | grep -q 'web/tcp:80 *10.77.0.12:80 *down' && break; sleep 0.1; done
grep -m 1 "backend is down" "$WORK/xlb.log" | sed 's/^[0-9T:.-]*Z *//'
cli backend list | grep -E 'SERVICE|web/'
servers 2
for _ in $(seq 40); do grep -q "backend is up again" "$WORK/xlb.log" && break; sleep 0.1; done
grep -m 1 "backend is up again" "$WORK/xlb.log" | sed 's/^[0-9T:.-]*Z *//'

say "Idle cost: xlb's CPU time over 3 s with no traffic"
ticks() { awk '{print $14+$15}' "/proc/$XLB_PID/stat"; }
t0=$(ticks); sleep 3; t1=$(ticks)
hz=$(getconf CLK_TCK)
python3 -c "print(f'{($t1-$t0)/$hz*1000:.0f} ms of CPU in 3000 ms = {($t1-$t0)/$hz/3*100:.2f}% of one core')"

say "Stopping xlb (SIGTERM)"
kill -TERM $XLB_PID; wait $XLB_PID || true; XLB_PID=
if ip -n $LB link show eth0 | grep -q xdp; then echo "XDP program still attached!"; exit 1; else echo "eth0 has no XDP program left."; fi

say "Summary (from xlb's --stats-file)"
python3 - "$WORK/stats.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"interface {d['interface']} ({d['mac']}), queues: " + ", ".join(f"{q['queue']} ({q['socket']} mode)" for q in d['queues']))
print("VIPs and SNAT addresses:")
for v in d["vips"]:
    extra = f"  <- held by {v['conflict_with']}" if v["conflict_with"] else ""
    print(f"  {v['vip']:<14} {v['state']}{extra}")
c = d["counters"]
print(f"frames received by xlb: {c['rx_frames']}, sent: {c['tx_frames']} (forwarded to backends {c['forwarded']}, "
      f"SNAT replies {c['snat_replies']}, ARP replies {c['arp_replies']}, NDP adverts {c['ndp_adverts']}, "
      f"echo replies {c['echo_replies']}, probes/announcements {c['control_frames']})")
print("per service:")
for s in d["services"]:
    print(f"  {s['name']:<16} {s['mode']:<5} {s['packets']:6d} packets in, {s['reply_packets']:6d} replies out")
print(f"config reloads: {d['reloads']}, snapshot generation {d['snapshot_generation']}")
print(f"conflicts seen: {c['conflicts']}; drops: " + (", ".join(f"{k} {v}" for k, v in d["drops"].items() if v) or "none"))
PY
