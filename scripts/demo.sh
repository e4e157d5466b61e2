#!/usr/bin/env bash
# The demo of what xlb does today, on the netns lab: xlb takes two VIPs (IPv4 and IPv6) on
# the `lb` host, probes for them, announces them, answers ARP/NDP for them from an AF_XDP
# socket, load-balances TCP to three backends by direct server return, refuses a third VIP
# that another host already holds, and leaves the interface as it found it. Everything
# happens in network namespaces this script makes and removes.
set -euo pipefail
cd "$(dirname "$0")/.."

XLB=${XLB:-target/release/xlb}
P=xl-demo-$$
SW=$P-switch CL=$P-client LB=$P-lb SQ=$P-squatter
BACKENDS="$P-backend1 $P-backend2 $P-backend3"
WORK=$(mktemp -d /tmp/xlb-demo.XXXXXX)
XLB_PID=

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
cleanup() {
  [ -n "$XLB_PID" ] && kill -9 "$XLB_PID" 2>/dev/null || true
  for ns in $BACKENDS $SQ $LB $CL $SW; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" -eq 0 ] || { echo "demo: needs root (network namespaces, XDP, AF_XDP)" >&2; exit 1; }
[ -x "$XLB" ] || { echo "demo: $XLB not built; run 'make demo'" >&2; exit 1; }

say "Building the lab: switch (bridge), client, lb, and a squatter that already holds 10.77.0.101"
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
host client 10.77.0.1/24 fd77::1/64
host lb 10.77.0.2/24 fd77::2/64
host squatter 10.77.0.9/24 10.77.0.101/24
for i in 1 2 3; do
  host backend$i 10.77.0.1$i/24
  ns=$P-backend$i
  # A DSR backend: the VIP on lo, never answering ARP for it, a server on port 80.
  ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2
  ip -n "$ns" addr add 10.77.0.100/32 dev lo
  ip netns exec "$ns" python3 tests/support/servers.py backend$i 80 4 10.77.0.100 >/dev/null 2>&1 &
  disown
done
LB_MAC=$(ip -n $LB link show eth0 | awk '/link\/ether/{print $2}')
SQ_MAC=$(ip -n $SQ link show eth0 | awk '/link\/ether/{print $2}')
echo "lb eth0 MAC: $LB_MAC    squatter MAC: $SQ_MAC"

say "Starting xlb on lb/eth0: VIPs 10.77.0.100, fd77::100 and 10.77.0.101 (taken); TCP 10.77.0.100:80 -> 3 backends (DSR)"
ip netns exec $CL tcpdump -l -n -e -i eth0 'arp or (icmp6 and ip6[40] >= 135 and ip6[40] <= 136)' >"$WORK/wire.txt" 2>/dev/null &
sleep 1
ip netns exec $LB "$XLB" run -i eth0 --vip 10.77.0.100 --vip fd77::100 --vip 10.77.0.101 \
  --service tcp:10.77.0.100:80=10.77.0.11:80,10.77.0.12:80,10.77.0.13:80 \
  --stats-file "$WORK/stats.json" 2>"$WORK/xlb.log" &
XLB_PID=$!
for _ in $(seq 100); do
  grep -q 'to="owned"' "$WORK/xlb.log" 2>/dev/null && grep -q "resolved backend=10.77.0.13" "$WORK/xlb.log" && break
  kill -0 $XLB_PID 2>/dev/null || { echo "xlb exited:"; cat "$WORK/xlb.log"; XLB_PID=; exit 1; }
  sleep 0.1
done
sleep 0.8
sed 's/^[0-9T:.-]*Z *//' "$WORK/xlb.log"

say "What the client saw on the wire at start-up (probes, then gratuitous ARP and NA from $LB_MAC)"
grep "^[0-9:.]* $LB_MAC" "$WORK/wire.txt" | head -12 | sed -E 's/^[0-9:.]+ //; s/, ethertype [^,]*, length [0-9]+:/:/'

say "Client: arping 10.77.0.100 (a VIP: answered by xlb from userspace)"
ip netns exec $CL arping -c 3 -w 3 -I eth0 10.77.0.100 || true

say "Client: arping 10.77.0.101 (held by the squatter: only it answers, xlb stays silent)"
ip netns exec $CL arping -c 2 -w 2 -I eth0 10.77.0.101 || true

say "Client: ping -6 fd77::100, then its neighbour entry (resolved by xlb's NDP answer)"
ip netns exec $CL ping -6 -c 1 -W 1 fd77::100 >/dev/null 2>&1 || true
ip -n $CL -6 neigh show fd77::100

say "Client: 1,000 TCP connections to 10.77.0.100:80 (replies come straight from the backends)"
ip netns exec $CL python3 - <<'PY'
import collections, socket, time
counts, failed, t0 = collections.Counter(), 0, time.time()
for i in range(1000):
    try:
        s = socket.create_connection(("10.77.0.100", 80), timeout=2)
        s.sendall(b"hello\n")
        counts[s.recv(100).decode().split()[0]] += 1
        s.close()
    except OSError:
        failed += 1
dt = time.time() - t0
for name, n in sorted(counts.items()):
    print(f"  {name}: {n:4d} connections ({n / 10:.1f}%)")
print(f"  {sum(counts.values())} answered, {failed} failed, in {dt:.2f} s")
PY

say "Client: ping 10.77.0.2 (the lb host's own address: still the kernel's, XDP passes it)"
ip netns exec $CL ping -c 2 -W 1 10.77.0.2 | tail -2

say "Idle cost: xlb's CPU time over 5 s with no traffic"
ticks() { awk '{print $14+$15}' "/proc/$XLB_PID/stat"; }
t0=$(ticks); sleep 5; t1=$(ticks)
hz=$(getconf CLK_TCK)
python3 -c "print(f'{($t1-$t0)/$hz*1000:.0f} ms of CPU in 5000 ms = {($t1-$t0)/$hz/5*100:.2f}% of one core')"

say "Stopping xlb (SIGTERM)"
kill -TERM $XLB_PID; wait $XLB_PID || true; XLB_PID=
if ip -n $LB link show eth0 | grep -q xdp; then echo "XDP program still attached!"; exit 1; else echo "eth0 has no XDP program left."; fi

say "Summary (from xlb's --stats-file)"
python3 - "$WORK/stats.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"interface {d['interface']} ({d['mac']}), queues: " + ", ".join(f"{q['queue']} ({q['socket']} mode)" for q in d['queues']))
print("VIPs:")
for v in d["vips"]:
    extra = f"  <- held by {v['conflict_with']}" if v["conflict_with"] else ""
    print(f"  {v['vip']:<14} {v['state']}{extra}")
c = d["counters"]
print(f"frames received by xlb: {c['rx_frames']}, sent: {c['tx_frames']} "
      f"(forwarded to backends {c['forwarded']}, ARP replies {c['arp_replies']}, NDP adverts {c['ndp_adverts']}, "
      f"probes/announcements {c['control_frames']})")
print("backends: " + ", ".join(f"{b['backend']} at {b['mac']}" for b in d["backends"]))
print(f"conflicts seen: {c['conflicts']}; drops: " + ", ".join(f"{k} {v}" for k, v in d["drops"].items() if v) )
x = d["xdp_classes"]
print("XDP program: " + ", ".join(f"{k} {v}" for k, v in x.items() if v))
PY
