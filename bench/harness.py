#!/usr/bin/env python3
"""xlb's end-to-end benchmark: on one netns lab and with one generator, in one run,

  1. the ceiling: pktgen forward, an AF_XDP loop that only rewrites MACs (no LB work);
  2. xlb DSR;  3. xlb SNAT;
  4. the kernel's nftables DNAT in the lb namespace, set up as kube-proxy's nftables mode
     sets up a service (numgen random mod N into per-backend DNAT chains);

then pktgen against trafgen as generators (straight into the sink), then xlb DSR with 1, 100
and 10,000 services and with 1k and 1M concurrent flows. For every run: packets sent, packets
delivered at the backends (sinks), loss, latency percentiles (from pktgen's timestamps), and
the CPU time of the lb namespace's processes. Writes results.json, results.md (with the
ratios) and plot.svg to the output directory.

Topology: gen --- bridge --- lb --- (same bridge) --- sinks (backend-1..N). Every host has
one veth with --queues queues. Traffic is one-way UDP (60-byte frames unless --size).

Run as root from the repository root: python3 bench/harness.py [--queues K] [--duration S].
Traffic only ever goes to addresses inside the namespaces this script makes.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
XLB = os.path.join(ROOT, "target/release/xlb")
PKTGEN = os.path.join(ROOT, "target/release/pktgen")
VIP = "10.88.0.100"
SNAT = "10.88.0.250"
PORT = 9000


def sh(*args, check=True, **kw):
    r = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


class Lab:
    def __init__(self, queues, backends):
        self.p = f"xl-bench-{os.getpid()}"
        self.ns = []
        self.queues = queues
        sw = self.add("switch")
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", sw, "link", "set", "br0", "up")
        for t in ("iptables", "ip6tables", "arptables"):
            sh("ip", "netns", "exec", sw, "sysctl", "-qw", f"net.bridge.bridge-nf-call-{t}=0", check=False)
        self.gen = self.host("gen", "10.88.0.1/24")
        self.lb = self.host("lb", "10.88.0.2/24")
        self.sinks = [self.host(f"b{i}", f"10.88.0.{10 + i}/24") for i in range(1, backends + 1)]
        self.mac = {n: self.link_mac(n) for n in [self.gen, self.lb] + self.sinks}
        # Every host speaks once, so the bridge knows where each MAC is and floods nothing.
        for n in [self.lb] + self.sinks:
            sh("ip", "netns", "exec", n, "ping", "-c", "1", "-W", "1", "10.88.0.1", check=False)
        # The sinks take their own address (SNAT, nftables) off the kernel, so nothing would
        # answer ARP for them: the lb host knows their MACs statically.
        for i, s in enumerate(self.sinks, 1):
            sh("ip", "-n", self.lb, "neigh", "replace", f"10.88.0.{10 + i}", "lladdr", self.mac[s], "dev", "eth0", "nud", "permanent")

    def add(self, role):
        ns = f"{self.p}-{role}"
        sh("ip", "netns", "add", ns)
        self.ns.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    def host(self, role, addr):
        ns = self.add(role)
        port = f"p-{role}"
        q = str(self.queues)
        sh("ip", "-n", self.ns[0], "link", "add", port, "numtxqueues", q, "numrxqueues", q, "type", "veth",
           "peer", "name", "eth0", "netns", ns, "numtxqueues", q, "numrxqueues", q)
        sh("ip", "-n", self.ns[0], "link", "set", port, "master", "br0", "up")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off", check=False)
        sh("ip", "-n", ns, "addr", "add", addr, "dev", "eth0")
        return ns

    def link_mac(self, ns):
        out = sh("ip", "-n", ns, "link", "show", "eth0").stdout
        return out.split("link/ether")[1].split()[0]

    def close(self):
        for ns in reversed(self.ns):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", ns, check=False)


def ns_cpu_seconds(ns):
    """CPU time (user + system) of the processes running in a namespace so far."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
        try:
            with open(f"/proc/{pid}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def start(ns, args, log):
    return subprocess.Popen(["ip", "netns", "exec", ns] + args, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)


def sinks_start(lab, addr_of, duration, out):
    procs = []
    for i, s in enumerate(lab.sinks, 1):
        procs.append(start(s, [PKTGEN, "sink", "-i", "eth0", "--queues", str(lab.queues), "--addr", addr_of(i),
                               "--duration", str(duration)], f"{out}/sink-{i}.log"))
    return procs


def sinks_finish(procs):
    total, lat = 0, []
    for p in procs:
        doc = json.loads(p.communicate()[0])
        total += doc["received"]
        lat.append(doc.get("latency_us", {}))
    # Latency: the worst sink's percentile (they see the same traffic mix).
    worst = {k: max(l.get(k, 0) for l in lat) for k in ("p50", "p99", "p999", "max")}
    return total, worst


def send(lab, args, duration, out, name):
    cmd = [PKTGEN, "send", "-i", "eth0", "--queues", str(lab.queues), "--dst-mac", lab.mac[lab.lb],
           "--dst", f"{VIP}:{PORT}", "--src", "10.88.1.1", "--src-count", str(max(16, flows_of(args) // 40000 + 1)),
           "--duration", str(duration)] + args
    p = start(lab.gen, cmd, f"{out}/send-{name}.log")
    text = p.communicate()[0]
    if p.returncode != 0:
        raise RuntimeError(f"pktgen send failed: " + open(f"{out}/send-{name}.log").read()[-2000:])
    return json.loads(text)


def wait_log(path, needle, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if needle in open(path).read():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{needle!r} not in {path}:\n" + open(path).read()[-3000:])


def xlb_config(lab, mode, services, out):
    backends = "".join(f"      - address: 10.88.0.{10 + i}\n" for i in range(1, len(lab.sinks) + 1))
    # Many services: one service with that many ports (each is a datapath service with its own
    # Maglev table; a smaller prime keeps 10,000 tables in memory).
    ports = "\n".join(f"      - {{port: {PORT + k}, protocol: UDP}}" for k in range(services))
    table = 65537 if services <= 100 else 1021
    text = f"""interfaces: [{{name: eth0}}]
snat: {{addresses: [{SNAT}]}}
announce: {{dadProbes: 0, garpCount: 1}}
conntrack: {{capacity: 1048576}}
services:
  - name: bench
    vip: {VIP}
    mode: {mode}
    maglevTableSize: {table}
    ports:
{ports}
    backends:
{backends}"""
    path = f"{out}/xlb-{mode}-{services}.yaml"
    open(path, "w").write(text)
    return path


def run_variant(lab, name, duration, out, gen_args, services=1):
    """One measurement: set the lb namespace up for `name`, send, collect."""
    dsr_like = name in ("ceiling", "xlb-dsr")
    addr_of = (lambda i: VIP) if dsr_like else (lambda i: f"10.88.0.{10 + i}")
    server = None
    log = f"{out}/lb-{name}-{services}.log"
    if name == "ceiling":
        macs = sum((["--to-mac", lab.mac[s]] for s in lab.sinks), [])
        server = start(lab.lb, [PKTGEN, "forward", "-i", "eth0", "--queues", str(lab.queues), "--addr", VIP,
                                "--duration", str(duration + 4)] + macs, log)
        time.sleep(1.0)
    elif name.startswith("xlb-"):
        mode = name.split("-")[1]
        cfg = xlb_config(lab, mode, services, out)
        server = start(lab.lb, [XLB, "run", "--config", cfg, "--admin-socket", f"{out}/xlb.sock",
                                "--queues", str(lab.queues)], log)
        wait_log(log, "xlb running", 60)
        wait_log(log, 'to="owned"', 20)
        time.sleep(0.5)
    elif name == "nftables":
        setup_nft(lab)
    cpu0 = ns_cpu_seconds(lab.lb)
    sinks = sinks_start(lab, addr_of, duration + 2, out)
    time.sleep(0.5)
    t0 = time.time()
    sent = send(lab, gen_args, duration, out, f"{name}-{services}")
    wall = time.time() - t0
    delivered, latency = sinks_finish(sinks)
    cpu = ns_cpu_seconds(lab.lb) - cpu0
    if server:
        server.terminate()
        server.communicate(timeout=20)
    if name == "nftables":
        sh("ip", "netns", "exec", lab.lb, "nft", "flush", "ruleset")
        sh("ip", "netns", "exec", lab.lb, "sysctl", "-qw", "net.ipv4.ip_forward=0")
    secs = sent["seconds"]
    res = {
        "variant": name, "services": services, "flows": flows_of(gen_args), "sent": sent["sent"],
        "sent_pps": sent["sent"] / secs, "delivered": delivered, "delivered_pps": delivered / secs,
        "loss": 1 - delivered / sent["sent"] if sent["sent"] else None,
        "latency_us": latency, "lb_cpu_s": cpu if name != "nftables" else None,
        "lb_cpu_ns_per_packet": (cpu * 1e9 / delivered) if delivered and name != "nftables" else None,
        "seconds": secs, "wall": wall,
    }
    print(f"  {name:<10} services {services:>5} flows {res['flows']:>8}: sent {res['sent_pps'] / 1e6:.3f} Mpps, "
          f"delivered {res['delivered_pps'] / 1e6:.3f} Mpps, loss {100 * (res['loss'] or 0):.1f}%, "
          f"p50 {latency['p50']:.0f} us, p99 {latency['p99']:.0f} us", flush=True)
    return res


def flows_of(args):
    return int(args[args.index("--flows") + 1]) if "--flows" in args else 1024


def setup_nft(lab):
    """kube-proxy's nftables mode for one UDP service: a service chain that picks an endpoint
    chain with numgen random mod N, each endpoint chain DNATs to its backend."""
    n = len(lab.sinks)
    eps = "\n".join(f"  chain endpoint-{i} {{\n    ip daddr {VIP} udp dport {PORT} dnat to 10.88.0.{10 + i}:{PORT}\n  }}"
                    for i in range(1, n + 1))
    vmap = ", ".join(f"{i - 1} : goto endpoint-{i}" for i in range(1, n + 1))
    rules = f"""table ip kube-proxy {{
{eps}
  chain service-bench {{
    numgen random mod {n} vmap {{ {vmap} }}
  }}
  chain services {{
    ip daddr . meta l4proto . th dport vmap {{ {VIP} . udp . {PORT} : goto service-bench }}
  }}
  chain nat-prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    jump services
  }}
}}
"""
    path = f"/tmp/{lab.p}-nft.conf"
    open(path, "w").write(rules)
    sh("ip", "netns", "exec", lab.lb, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for k in ("all", "default", "eth0"):
        sh("ip", "netns", "exec", lab.lb, "sysctl", "-qw", f"net.ipv4.conf.{k}.rp_filter=0")
    # The generator addresses the frames to the lb's MAC: the kernel DNATs and forwards them.
    sh("ip", "netns", "exec", lab.lb, "nft", "-f", path)


def generators(lab, duration, out, size):
    """pktgen and trafgen, one core each, straight at the first sink."""
    s = lab.sinks[0]
    dst_mac = lab.mac[s]
    res = []
    # pktgen
    sinks = [start(s, [PKTGEN, "sink", "-i", "eth0", "--queues", str(lab.queues), "--addr", "10.88.0.11",
                       "--duration", str(duration + 2)], f"{out}/sink-gen-pktgen.log")]
    time.sleep(0.5)
    p = start(lab.gen, [PKTGEN, "send", "-i", "eth0", "--queues", "1", "--cores", "0", "--dst-mac", dst_mac,
                        "--dst", f"10.88.0.11:{PORT}", "--src", "10.88.1.1", "--flows", "1024", "--size", str(size),
                        "--duration", str(duration)], f"{out}/send-gen-pktgen.log")
    sent = json.loads(p.communicate()[0])
    got, _ = sinks_finish(sinks)
    res.append({"generator": "pktgen", "sent_pps": sent["sent"] / sent["seconds"], "delivered_pps": got / sent["seconds"],
                "sent": sent["sent"], "delivered": got})
    # trafgen: the same 60-byte UDP frames (1024 source ports), PF_PACKET TX ring, one CPU.
    conf = f"/tmp/{lab.p}-trafgen.cfg"
    gen_mac = lab.mac[lab.gen]
    open(conf, "w").write(
        "{\n"
        f"  eth(da={dst_mac}, sa={gen_mac}, type=0x0800),\n"
        "  ipv4(saddr=10.88.1.1, daddr=10.88.0.11, ttl=64, df),\n"
        f"  udp(sport=dinc(10000, 11023), dport={PORT}, csum=0),\n"
        f"  fill(0x00, {max(size - 42, 12)})\n"
        "}\n")
    sinks = [start(s, [PKTGEN, "sink", "-i", "eth0", "--queues", str(lab.queues), "--addr", "10.88.0.11",
                       "--duration", str(duration + 2)], f"{out}/sink-gen-trafgen.log")]
    time.sleep(0.5)
    t0 = time.time()
    # trafgen prints its totals when interrupted.
    tg = subprocess.run(["timeout", "-s", "INT", str(duration), "ip", "netns", "exec", lab.gen, "taskset", "-c", "0",
                         "trafgen", "-o", "eth0", "-i", conf, "-P", "1"], capture_output=True, text=True, timeout=duration + 30)
    text = tg.stdout + tg.stderr
    secs = time.time() - t0
    got, _ = sinks_finish(sinks)
    open(f"{out}/trafgen.log", "w").write(text)
    tsent = 0
    for line in text.splitlines():
        if "packets outgoing" in line:
            tsent = int(line.split()[0])
    res.append({"generator": "trafgen", "sent_pps": tsent / secs, "delivered_pps": got / secs, "sent": tsent, "delivered": got})
    for r in res:
        print(f"  {r['generator']:<8} one core: sent {r['sent_pps'] / 1e6:.3f} Mpps, delivered {r['delivered_pps'] / 1e6:.3f} Mpps",
              flush=True)
    return res


def svg_plot(path, sweep_services, sweep_flows):
    """Two small line charts: delivered Mpps against services and against flows (log x)."""
    import math
    w, h, pad = 360, 240, 50

    def chart(x0, title, points, xlabel):
        if not points:
            return ""
        ymax = max(p[1] for p in points) * 1.2 or 1
        xs = [math.log10(p[0]) for p in points]
        xmin, xmax = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
        def X(v):
            return x0 + pad + (math.log10(v) - xmin) / (xmax - xmin) * (w - 2 * pad)
        def Y(v):
            return h - pad + 10 - v / ymax * (h - 2 * pad)
        line = " ".join(f"{X(p[0]):.1f},{Y(p[1]):.1f}" for p in points)
        s = [f'<text x="{x0 + w / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
             f'<line x1="{x0 + pad}" y1="{h - pad + 10}" x2="{x0 + w - pad}" y2="{h - pad + 10}" stroke="black"/>',
             f'<line x1="{x0 + pad}" y1="{pad - 10}" x2="{x0 + pad}" y2="{h - pad + 10}" stroke="black"/>',
             f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="2"/>',
             f'<text x="{x0 + w / 2}" y="{h - 8}" text-anchor="middle" font-size="12">{xlabel}</text>',
             f'<text x="{x0 + 12}" y="{h / 2}" font-size="12" transform="rotate(-90 {x0 + 12} {h / 2})" text-anchor="middle">delivered Mpps</text>']
        for p in points:
            s.append(f'<circle cx="{X(p[0]):.1f}" cy="{Y(p[1]):.1f}" r="3" fill="#1f77b4"/>')
            s.append(f'<text x="{X(p[0]):.1f}" y="{h - pad + 24}" text-anchor="middle" font-size="10">{p[0]:,}</text>')
            s.append(f'<text x="{X(p[0]):.1f}" y="{Y(p[1]) - 6:.1f}" text-anchor="middle" font-size="10">{p[1]:.3f}</text>')
        return "\n".join(s)

    body = chart(0, "xlb DSR: throughput vs services", sweep_services, "services (log)") + "\n" + \
        chart(w, "xlb DSR: throughput vs concurrent flows", sweep_flows, "flows (log)")
    open(path, "w").write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * w}" height="{h}" '
                          f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n')


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queues", type=int, default=1, help="queues per interface and workers/threads per host")
    ap.add_argument("--backends", type=int, default=1, help="sink hosts behind the load balancer")
    ap.add_argument("--duration", type=float, default=5, help="seconds per run")
    ap.add_argument("--size", type=int, default=60, help="frame size (bytes, without FCS)")
    ap.add_argument("--rate", type=int, default=0, help="generator rate in pps (0: as fast as it can)")
    ap.add_argument("--out", default=os.path.join(ROOT, "target/bench"), help="output directory")
    ap.add_argument("--quick", action="store_true", help="skip the service and flow sweeps")
    ap.add_argument("--fixed-rate", type=int, default=50000,
                    help="also run the four variants at this offered rate (pps), below saturation (0: skip)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("harness: needs root (network namespaces, XDP, AF_XDP)")
    for b in (XLB, PKTGEN):
        if not os.access(b, os.X_OK):
            sys.exit(f"harness: {b} is not built; run `make bench`")
    out = os.path.join(a.out, datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    ncpu = os.cpu_count()
    need = 3 * a.queues
    note = None
    if ncpu < need:
        note = (f"{ncpu} CPUs for {need} busy threads (generator, load balancer and sinks, {a.queues} queue(s) each): "
                "the three share cores, so absolute rates are contention-bound; compare the ratios.")
        print(f"harness: {note}")
    lab = Lab(a.queues, a.backends)
    gen = ["--flows", "1024", "--size", str(a.size)] + (["--rate", str(a.rate)] if a.rate else [])
    results = {"started": out.rsplit("/", 1)[1], "cpus": ncpu, "queues": a.queues, "backends": a.backends,
               "duration_s": a.duration, "frame_size": a.size, "contention": note, "variants": [], "generators": [],
               "sweep_services": [], "sweep_flows": []}
    try:
        print(f"variants ({a.queues} queue(s), {a.backends} sinks, {a.duration} s each):", flush=True)
        for v in ("ceiling", "xlb-dsr", "xlb-snat", "nftables"):
            results["variants"].append(run_variant(lab, v, a.duration, out, gen))
        if a.fixed_rate:
            print(f"variants at an offered {a.fixed_rate} pps:", flush=True)
            fixed = ["--flows", "1024", "--size", str(a.size), "--rate", str(a.fixed_rate)]
            results["variants_fixed_rate"] = [run_variant(lab, v, a.duration, out, fixed)
                                              for v in ("ceiling", "xlb-dsr", "xlb-snat", "nftables")]
        print("generators:", flush=True)
        results["generators"] = generators(lab, a.duration, out, a.size)
        if not a.quick:
            print("xlb DSR against services and flows:", flush=True)
            for n in (1, 100, 10000):
                args = gen[:] + ["--dports", str(n)]
                results["sweep_services"].append(run_variant(lab, "xlb-dsr", a.duration, out, args, services=n))
            for f in (1000, 1000000):
                args = ["--flows", str(f), "--size", str(a.size)] + (["--rate", str(a.rate)] if a.rate else [])
                results["sweep_flows"].append(run_variant(lab, "xlb-dsr", a.duration, out, args))
    finally:
        lab.close()
    v = {r["variant"]: r for r in results["variants"]}
    g = {r["generator"]: r for r in results["generators"]}
    def ratio(a_, b_):
        return a_ / b_ if b_ else None
    results["ratios"] = {
        "xlb_dsr/ceiling": ratio(v["xlb-dsr"]["delivered_pps"], v["ceiling"]["delivered_pps"]),
        "xlb_snat/ceiling": ratio(v["xlb-snat"]["delivered_pps"], v["ceiling"]["delivered_pps"]),
        "xlb_dsr/nftables": ratio(v["xlb-dsr"]["delivered_pps"], v["nftables"]["delivered_pps"]),
        "xlb_snat/nftables": ratio(v["xlb-snat"]["delivered_pps"], v["nftables"]["delivered_pps"]),
        "pktgen/trafgen": ratio(g["pktgen"]["sent_pps"], g["trafgen"]["sent_pps"]),
    }
    json.dump(results, open(f"{out}/results.json", "w"), indent=2)
    md = [f"# xlb benchmark {results['started']}", "",
          f"{ncpu} CPUs, {a.queues} queue(s) per host, {a.backends} sinks, {a.size}-byte UDP frames, {a.duration} s per run.",
          "" if not note else f"Note: {note}", "",
          "| variant | sent Mpps | delivered Mpps | loss | p50 us | p99 us | p99.9 us | lb CPU ns/pkt |",
          "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["variants"] + results["sweep_services"] + results["sweep_flows"]:
        label = r["variant"] + (f" ({r['services']} services)" if r["services"] != 1 else "") + \
            (f" ({r['flows']:,} flows)" if r["flows"] != 1024 else "")
        cpu = f"{r['lb_cpu_ns_per_packet']:.0f}" if r["lb_cpu_ns_per_packet"] else "n/a (kernel)"
        md.append(f"| {label} | {r['sent_pps'] / 1e6:.3f} | {r['delivered_pps'] / 1e6:.3f} | {100 * (r['loss'] or 0):.1f}% | "
                  f"{r['latency_us']['p50']:.0f} | {r['latency_us']['p99']:.0f} | {r['latency_us']['p999']:.0f} | {cpu} |")
    if results.get("variants_fixed_rate"):
        md += ["", f"At an offered {a.fixed_rate} pps (below every variant's saturation):", "",
               "| variant | delivered Mpps | loss | p50 us | p99 us | p99.9 us | max us |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in results["variants_fixed_rate"]:
            l = r["latency_us"]
            md.append(f"| {r['variant']} | {r['delivered_pps'] / 1e6:.3f} | {100 * (r['loss'] or 0):.2f}% | {l['p50']:.0f} | "
                      f"{l['p99']:.0f} | {l['p999']:.0f} | {l['max']:.0f} |")
    md += ["", "| generator (one core) | sent Mpps | delivered Mpps |", "| --- | --- | --- |"]
    for r in results["generators"]:
        md.append(f"| {r['generator']} | {r['sent_pps'] / 1e6:.3f} | {r['delivered_pps'] / 1e6:.3f} |")
    md += ["", "| ratio | value | target |", "| --- | --- | --- |"]
    targets = {"xlb_dsr/ceiling": ">= 0.90", "xlb_snat/ceiling": ">= 0.80", "xlb_dsr/nftables": ">= 2",
               "xlb_snat/nftables": "-", "pktgen/trafgen": ">= 4"}
    for k, val in results["ratios"].items():
        md.append(f"| {k} | {val:.2f} | {targets[k]} |" if val is not None else f"| {k} | n/a | {targets[k]} |")
    open(f"{out}/results.md", "w").write("\n".join(md) + "\n")
    svg_plot(f"{out}/plot.svg", [(r["services"], r["delivered_pps"] / 1e6) for r in results["sweep_services"]],
             [(r["flows"], r["delivered_pps"] / 1e6) for r in results["sweep_flows"]])
    print("\n".join(md))
    print(f"\nresults: {out}/results.json, results.md, plot.svg")


if __name__ == "__main__":
    main()
