#!/usr/bin/env python3
"""xlb's end-to-end benchmark: on one netns lab and with one generator, in one run,

  1. the ceiling: pktgen forward, an AF_XDP loop that only rewrites MACs (no LB work);
  2. xlb DSR;  3. xlb SNAT;
  4. the kernel's nftables DNAT in the lb namespace, set up as kube-proxy's nftables mode
     sets up a service (numgen random mod N into per-backend DNAT chains);

each as fast as the generator goes and again at a fixed rate below saturation (latency), then
pktgen against trafgen as generators (straight into a sink), then xlb DSR with 1, 100 and
10,000 services and with 1k and 1M concurrent flows.

One load-balancer core each: the load balancer under test gets its own CPUs (on 2 CPUs: CPU 1)
and the generator and the sinks share the others (CPU 0). xlb's workers and pktgen forward are
pinned there (--cores), and so is the kernel's receive work for the lb's eth0: veth runs XDP and
the copy into an AF_XDP socket's UMEM in its NAPI poll, on the CPU that transmitted the frame,
so the lb's eth0 gets threaded NAPI (its NAPI kthread pinned to the LB CPUs) and the bridge
ports get RPS to the lab CPUs (what leaves the lb is bridged and received on the lab's side).
nftables' whole path (DNAT, forwarding, transmit) runs in that same NAPI thread. Every variant
records per-CPU time and NET_RX softirqs, so the placement is checked, not assumed.

For every run: packets sent, packets delivered at the backends (sinks), loss, latency
percentiles (from pktgen's timestamps), and the load balancer's CPU time per packet it sent on,
split into its own work (xlb: the workers' busy time, busy_ns) and the kernel's (the lb eth0's
NAPI thread, the LB's system time). Each variant waits for the previous one to let go of the
lab (processes gone, XDP detached, no AF_XDP socket left) and checks its tools' output; one
that fails is reported as failed, with the reason, and the rest still run. The exit status is
non-zero only if the lab cannot be built or every run failed. Writes results.json, results.md and plot.svg to a new
directory under --out; with --publish also docs/benchmarks.md and docs/bench.svg.

Topology: gen --- bridge --- lb --- (same bridge) --- sinks (backend-1..N). Every host has
one veth with --queues queues. Traffic is one-way UDP (60-byte frames unless --size).

Run as root from the repository root: python3 bench/harness.py [--queues K] [--duration S].
It tests target/release/xlb and target/release/pktgen; XLB_BIN and PKTGEN_BIN name other builds.
Interrupted (SIGINT), it still writes the runs that finished, and exits non-zero.
Traffic only ever goes to addresses inside the namespaces this script makes.
"""

import argparse
import datetime
import html
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The builds under test; XLB_BIN and PKTGEN_BIN name others (scripts/device-scaling.sh runs
# the ones scripts/device-bundle.sh carried, on a machine with no Rust toolchain).
XLB = os.environ.get("XLB_BIN") or os.path.join(ROOT, "target/release/xlb")
PKTGEN = os.environ.get("PKTGEN_BIN") or os.path.join(ROOT, "target/release/pktgen")
VIP = "10.88.0.100"
SNAT = "10.88.0.250"
PORT = 9000
VARIANTS = ("ceiling", "xlb-dsr", "xlb-snat", "nftables")
TICK = os.sysconf("SC_CLK_TCK")
# /proc/stat's per-CPU columns, in order.
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


class Failed(Exception):
    """A variant that could not be measured: the reason goes into the results, the rest run on."""


class LabError(Exception):
    """The lab could not be built: nothing can be measured."""


def sh(*args, check=True, timeout=60):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def ns_write(ns, path, value):
    """Writes a sysfs file of a namespace's device (`ip netns exec` mounts that namespace's /sys)."""
    sh("ip", "netns", "exec", ns, "sh", "-c", f"echo {value} > {path}")


def cpu_list(cpus):
    return ",".join(str(c) for c in cpus)


def cpu_mask(cpus):
    """The hex CPU mask sysfs takes (rps_cpus), in comma-separated 32-bit groups."""
    m = sum(1 << c for c in cpus)
    groups = []
    while True:
        groups.append(f"{m & 0xFFFFFFFF:08x}")
        m >>= 32
        if not m:
            break
    return ",".join(reversed(groups))


def tail(path, n=1500):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:].strip()
    except OSError:
        return "(no log)"


def last_json(text):
    """The JSON document a tool printed last on stdout (pktgen prints one, pretty, at the end)."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    starts = [m.start() for m in re.finditer(r"(?m)^\{", text)]
    for s in reversed(starts):
        try:
            return json.loads(text[s:])
        except ValueError:
            continue
    return None


class Placement:
    """Which CPUs the load balancer under test gets (the last --queues ones) and which the
    generator and the sinks share (the rest); shared when there are too few for both."""

    def __init__(self, ncpu, queues, backends):
        self.ncpu = ncpu
        self.shared = ncpu <= queues
        if self.shared:
            self.lb = self.lab = list(range(ncpu))
        else:
            self.lb = list(range(ncpu - queues, ncpu))
            self.lab = list(range(ncpu - queues))
        self.notes = []
        if self.shared:
            self.notes.append(f"shared: {ncpu} CPU(s) for {queues} load-balancer queue(s) and the generator and sinks; "
                              "the load balancer shares its cores with them, so its figures include their contention")
        else:
            self.notes.append(f"the load balancer under test alone on CPU {cpu_list(self.lb)}")
        lab_threads = queues * (1 + backends)
        if lab_threads > len(self.lab):
            self.notes.append(f"the generator and {backends} sink(s) ({lab_threads} threads) share CPU {cpu_list(self.lab)}")
        else:
            self.notes.append(f"the generator and sinks on CPU {cpu_list(self.lab)}")

    def describe(self):
        return "; ".join(self.notes)


def napi_threads():
    """pid -> name of the kernel's threaded-NAPI threads that run now."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm.startswith("napi/"):
            found[int(pid)] = comm
    return found


def xdp_attached(ns):
    r = sh("ip", "-n", ns, "link", "show", "eth0", check=False)
    return re.search(r"\bxdp|prog/xdp", r.stdout) is not None


def xsk_sockets(ns):
    """AF_XDP sockets open in a namespace (ss --xdp; 0 when ss cannot list them)."""
    r = sh("ip", "netns", "exec", ns, "ss", "--xdp", "-a", "-H", check=False)
    return len([ln for ln in r.stdout.splitlines() if ln.strip()]) if r.returncode == 0 else 0


class Lab:
    def __init__(self, queues, backends, place):
        self.p = f"xl-bench-{os.getpid()}"
        self.ns = []
        self.queues = queues
        self.place = place
        self.steering = {}
        self.napi_base = set(napi_threads())
        try:
            self.build(backends)
        except (RuntimeError, subprocess.TimeoutExpired, IndexError) as e:
            self.close()
            raise LabError(f"could not build the lab: {e}") from e
        except KeyboardInterrupt:
            self.close()
            raise

    def build(self, backends):
        sw = self.add("switch")
        self.sw = sw
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", sw, "link", "set", "br0", "up")
        for t in ("iptables", "ip6tables", "arptables"):
            sh("ip", "netns", "exec", sw, "sysctl", "-qw", f"net.bridge.bridge-nf-call-{t}=0", check=False)
        self.ports = []
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
            sh("ip", "-n", self.lb, "neigh", "replace", f"10.88.0.{10 + i}", "lladdr", self.mac[s], "dev", "eth0",
               "nud", "permanent")
        self.steer()

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
        self.ports.append(port)
        return ns

    def link_mac(self, ns):
        out = sh("ip", "-n", ns, "link", "show", "eth0").stdout
        return out.split("link/ether")[1].split()[0]

    def steer(self):
        """Puts the kernel's packet work on the cores of whoever it serves.

        A veth transmit runs the peer's receive on the transmitting CPU: as a backlog softirq
        (where RPS can move it) for a device without NAPI, or by scheduling the peer's NAPI
        there (XDP, GRO) where RPS comes too late. So: RPS on every bridge port sends what the
        hosts transmit, the LB included, to the lab CPUs (bridging, then the sinks' XDP and
        copies); and the lb's eth0 gets NAPI (GRO on) in a thread of its own pinned to the LB
        CPUs, which then runs its XDP and UMEM copies (ceiling, xlb) or the whole nftables path
        (DNAT, forwarding, the transmit to the bridge).
        """
        mask = cpu_mask(self.place.lab)
        for port in self.ports:
            for q in range(self.queues):
                ns_write(self.sw, f"/sys/class/net/{port}/queues/rx-{q}/rps_cpus", mask)
        self.steering["bridge_ports_rps_cpus"] = mask
        # veth hands a frame to the peer's NAPI only if it could be aggregated: with TSO on the
        # sending side it goes to the backlog instead. An XDP program on eth0 turns the bridge
        # port's TSO off by itself; nftables has none, so turn it off here, for the same path.
        sh("ip", "netns", "exec", self.sw, "ethtool", "-K", "p-lb", "tso", "off")
        self.lb_napi = self.thread_napi(self.lb, set())
        self.steering["lb_eth0_napi_threads"] = sorted(self.lb_napi.values())
        if not self.lb_napi:
            self.steering["warning"] = ("the lb's eth0 got no NAPI thread: its receive work runs on the generator's "
                                        "CPU and is missing from the LB's kernel time")
        self.pin_napi()

    def thread_napi(self, ns, known):
        """Gives a host's eth0 threaded NAPI (GRO on gives a veth NAPI without XDP); returns the
        new kernel threads."""
        sh("ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "gro", "on", check=False)
        try:
            ns_write(ns, "/sys/class/net/eth0/threaded", 1)
        except RuntimeError as e:
            self.steering.setdefault("errors", []).append(str(e))
            return {}
        time.sleep(0.2)
        return {pid: n for pid, n in napi_threads().items() if pid not in self.napi_base and pid not in known}

    def pin_napi(self, threads=None, cpus=None):
        """(Re)pins the lb's NAPI threads to the LB CPUs; finds them again if they were remade."""
        if threads is None:
            alive = {p: n for p, n in self.lb_napi.items() if os.path.exists(f"/proc/{p}")}
            if len(alive) < len(self.lb_napi):
                alive = {p: n for p, n in napi_threads().items() if p not in self.napi_base}
            self.lb_napi = alive
            threads, cpus = self.lb_napi, self.place.lb
        for pid in threads:
            sh("taskset", "-pc", cpu_list(cpus), str(pid), check=False)

    def release(self, timeout=15):
        """Waits until the previous variant has let go: its processes gone, no XDP program on a
        host's eth0, no AF_XDP socket left. (A new xlb once got EBUSY binding a queue that the
        previous one still held.) Leftovers are killed at the timeout, and that variant fails."""
        hosts = [self.gen, self.lb] + self.sinks
        end = time.time() + timeout
        while True:
            busy = []
            for ns in hosts:
                pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
                if pids:
                    busy.append(f"{ns}: processes {' '.join(pids)}")
                elif xdp_attached(ns):
                    busy.append(f"{ns}: an XDP program on eth0")
                elif xsk_sockets(ns):
                    busy.append(f"{ns}: AF_XDP sockets open")
            if not busy:
                return
            if time.time() > end:
                for ns in hosts:
                    for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                        sh("kill", "-9", pid, check=False)
                raise Failed(f"the previous run did not release the lab within {timeout} s: {'; '.join(busy)}")
            time.sleep(0.1)

    def close(self):
        for ns in reversed(self.ns):
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", ns, check=False)


class Tool:
    """A process in a namespace, pinned to CPUs, with its stdout and stderr kept in files."""

    def __init__(self, ns, args, name, out, cpus):
        self.name = name
        self.out = f"{out}/{name}.out"
        self.log = f"{out}/{name}.log"
        # ip netns exec and taskset both exec: the pid is the tool's own.
        cmd = ["ip", "netns", "exec", ns, "taskset", "-c", cpu_list(cpus)] + args
        with open(self.out, "w") as o, open(self.log, "w") as e:
            self.p = subprocess.Popen(cmd, stdout=o, stderr=e, stdin=subprocess.DEVNULL)

    @property
    def pid(self):
        return self.p.pid

    def alive(self):
        return self.p.poll() is None

    def wait(self, timeout):
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(10)
            raise Failed(f"{self.name} still ran {timeout:.0f} s after it was due to end: killed; "
                         f"its log ends: {tail(self.log, 600)}") from None

    def stop(self, timeout=20):
        """SIGTERM (xlb then writes its counters), SIGKILL if it does not end."""
        if self.alive():
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        return self.p.returncode

    def result(self):
        """The tool's JSON summary; a failure (with its stderr) if it printed none."""
        with open(self.out, errors="replace") as f:
            text = f.read()
        doc = last_json(text)
        if doc is None:
            raise Failed(f"{self.name} (exit status {self.p.returncode}) printed no JSON summary "
                         f"(stdout: {text[-200:]!r}); its log ({self.log}) ends: {tail(self.log, 600)}")
        return doc


def wait_until(what, cond, timeout, proc=None):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        if proc is not None and not proc.alive():
            raise Failed(f"{proc.name} exited (status {proc.p.returncode}) before {what}; its log ends: "
                         f"{tail(proc.log, 800)}")
        time.sleep(0.05)
    extra = f"; {proc.name}'s log ends: {tail(proc.log, 800)}" if proc is not None else ""
    raise Failed(f"no {what} after {timeout} s{extra}")


def log_has(path, needle):
    try:
        with open(path, errors="replace") as f:
            return needle in f.read()
    except OSError:
        return False


def start_ready(make, what, ready, timeout):
    """Starts a tool and waits until `ready()`; starts it again (three tries) when it stopped on
    EBUSY, a queue its predecessor's socket had not quite released."""
    for attempt in range(3):
        proc = make(attempt)
        try:
            wait_until(what, ready, timeout, proc)
            return proc
        except Failed:
            proc.stop(5)
            busy = any(log_has(proc.log, m) for m in ("Device or resource busy", "EBUSY", "os error 16"))
            if not busy or attempt == 2:
                raise
            time.sleep(1.0)
    raise AssertionError("unreachable")


# CPU accounting: per-process times (all threads, dead ones included) and per-CPU times.

def proc_times(pid):
    """(user, system) seconds of a process or kernel thread so far."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) / TICK, int(rest[12]) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0, 0.0


def cpu_times():
    """cpu index -> /proc/stat columns (seconds)."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            m = re.match(r"cpu(\d+) (.*)", line)
            if m:
                vals = [int(v) / TICK for v in m.group(2).split()]
                out[int(m.group(1))] = dict(zip(CPU_FIELDS, vals))
    return out


def net_softirqs():
    """'NET_RX'/'NET_TX' -> softirq counts per CPU."""
    out = {}
    with open("/proc/softirqs") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] in ("NET_RX:", "NET_TX:"):
                out[parts[0][:-1]] = [int(v) for v in parts[1:]]
    return out


def worker_sched(pid):
    """(on-CPU ns, runnable-but-waiting ns) summed over a process's xlb worker threads (xlb-w*),
    from schedstat."""
    on = wait = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if not f.read().startswith("xlb-w"):
                    continue
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                a, b = f.read().split()[:2]
            on, wait = on + int(a), wait + int(b)
        except (OSError, ValueError):
            continue
    return on, wait


def link_stats(ns, dev):
    """A device's packet counters (stats64): rx/tx packets and drops."""
    r = sh("ip", "-s", "-j", "-n", ns, "link", "show", dev, check=False)
    try:
        s = json.loads(r.stdout)[0]["stats64"]
        return {"rx": s["rx"]["packets"], "rx_dropped": s["rx"]["dropped"], "tx": s["tx"]["packets"],
                "tx_dropped": s["tx"]["dropped"]}
    except (ValueError, KeyError, IndexError):
        return {}


def link_delta(a, b):
    return {k: b[k] - a[k] for k in a if k in b}


class Window:
    """CPU time of the load balancer (processes and the lb's NAPI threads) and of every CPU, and
    the lb's packet counters, over the measured interval."""

    def __init__(self, lab, lb_pids, napi_pids):
        self.lab = lab
        self.lb_pids, self.napi_pids = list(lb_pids), list(napi_pids)
        self.links0 = self.links()
        self.t0 = time.monotonic()
        self.lb0 = {p: proc_times(p) for p in self.lb_pids}
        self.sched0 = {p: worker_sched(p) for p in self.lb_pids}
        self.napi0 = {p: proc_times(p) for p in self.napi_pids}
        self.cpu0 = cpu_times()
        self.irq0 = net_softirqs()

    def links(self):
        # eth0 of the lb: what reached the load balancer and what it sent; p-lb (its bridge
        # port): what could not be handed to the lb (veth's ring full counts as its tx_dropped).
        return {"lb_eth0": link_stats(self.lab.lb, "eth0"), "bridge_port": link_stats(self.lab.sw, "p-lb")}

    def close(self, place):
        secs = time.monotonic() - self.t0
        lb1 = {p: proc_times(p) for p in self.lb_pids}
        sched1 = {p: worker_sched(p) for p in self.lb_pids}
        napi1 = {p: proc_times(p) for p in self.napi_pids}
        cpu1, irq1 = cpu_times(), net_softirqs()
        links1 = self.links()
        on = sum(sched1[p][0] - self.sched0[p][0] for p in self.lb_pids)
        waited = sum(sched1[p][1] - self.sched0[p][1] for p in self.lb_pids)
        user = sum(lb1[p][0] - self.lb0[p][0] for p in self.lb_pids)
        system = sum(lb1[p][1] - self.lb0[p][1] for p in self.lb_pids)
        napi = sum(sum(napi1[p]) - sum(self.napi0[p]) for p in self.napi_pids)
        per_cpu = {}
        for c in sorted(cpu1):
            d = {k: cpu1[c][k] - self.cpu0.get(c, {}).get(k, 0) for k in CPU_FIELDS}
            total = sum(d.values()) or 1e-9
            per_cpu[c] = {
                "busy": 1 - (d["idle"] + d["iowait"]) / total,
                "user": (d["user"] + d["nice"]) / total,
                "system": d["system"] / total,
                "softirq": (d["softirq"] + d["irq"]) / total,
                "net_rx": irq1.get("NET_RX", [0] * (c + 1))[c] - self.irq0.get("NET_RX", [0] * (c + 1))[c],
                "role": "lb" if c in place.lb and not place.shared else ("lab" if c in place.lab else "lb+lab"),
            }
        lb_busy = sum(per_cpu[c]["busy"] for c in place.lb if c in per_cpu) / len(place.lb)
        ours = (user + system + napi) / (secs * len(place.lb))
        return {"seconds": secs, "user_s": user, "system_s": system, "napi_s": napi,
                "lb_cores_busy": lb_busy, "lb_cores_ours": ours, "per_cpu": per_cpu,
                "worker_on_cpu_s": on / 1e9, "worker_waiting_s": waited / 1e9,
                "links": {k: link_delta(self.links0[k], links1[k]) for k in links1}}


def flows_of(args):
    return int(args[args.index("--flows") + 1]) if "--flows" in args else 1024


def rate_of(args):
    return int(args[args.index("--rate") + 1]) if "--rate" in args else 0


def xlb_config(lab, mode, services, out, tag):
    backends = "".join(f"      - address: 10.88.0.{10 + i}\n" for i in range(1, len(lab.sinks) + 1))
    # Many services: one service with that many ports (each is a datapath service with its own
    # Maglev table, sized to its backends as a user's would be).
    ports = "\n".join(f"      - {{port: {PORT + k}, protocol: UDP}}" for k in range(services))
    text = f"""interfaces: [{{name: eth0}}]
snat: {{addresses: [{SNAT}]}}
announce: {{dadProbes: 0, garpCount: 1}}
conntrack: {{capacity: 1048576}}
services:
  - name: bench
    vip: {VIP}
    mode: {mode}
    ports:
{ports}
    backends:
{backends}"""
    path = f"{out}/{tag}.yaml"
    with open(path, "w") as f:
        f.write(text)
    return path


def setup_nft(lab, out):
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
    path = f"{out}/nftables.conf"
    with open(path, "w") as f:
        f.write(rules)
    sh("ip", "netns", "exec", lab.lb, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for k in ("all", "default", "eth0"):
        sh("ip", "netns", "exec", lab.lb, "sysctl", "-qw", f"net.ipv4.conf.{k}.rp_filter=0")
    # The generator addresses the frames to the lb's MAC: the kernel DNATs and forwards them.
    sh("ip", "netns", "exec", lab.lb, "nft", "-f", path)


def teardown_nft(lab):
    sh("ip", "netns", "exec", lab.lb, "nft", "flush", "ruleset", check=False)
    sh("ip", "netns", "exec", lab.lb, "sysctl", "-qw", "net.ipv4.ip_forward=0", check=False)


def start_lb(lab, name, services, out, tag, duration):
    """The load balancer of a variant, ready for traffic (None for nftables: rules only)."""
    place, q = lab.place, str(lab.queues)
    cores = cpu_list(place.lb[i % len(place.lb)] for i in range(lab.queues))
    if name == "ceiling":
        macs = sum((["--to-mac", lab.mac[s]] for s in lab.sinks), [])
        # Stopped with SIGTERM after the run; its duration only has to outlast it.
        args = [PKTGEN, "forward", "-i", "eth0", "--queues", q, "--cores", cores, "--addr", VIP,
                "--duration", str(duration + 60)] + macs
        return start_ready(lambda k: Tool(lab.lb, args, f"{tag}-lb{'-retry' * k}", out, place.lb),
                           "XDP program on the lb's eth0", lambda: xdp_attached(lab.lb), 20)
    if name.startswith("xlb-"):
        cfg = xlb_config(lab, name.split("-")[1], services, out, tag)
        # --no-state: each variant starts with empty tables, not the previous variant's flows.
        args = [XLB, "run", "--config", cfg, "--admin-socket", f"{out}/{tag}.sock", "--queues", q,
                "--cores", cores, "--stats-file", f"{out}/{tag}-stats.json", "--no-state"]
        log = [None]

        def make(k):
            t = Tool(lab.lb, args, f"{tag}-lb{'-retry' * k}", out, place.lb)
            log[0] = t.log
            return t

        def ready():
            return log_has(log[0], "xlb running") and log_has(log[0], 'to="owned"')
        proc = start_ready(make, "'xlb running' and an owned VIP in xlb's log", ready, 90)
        time.sleep(0.3)
        return proc
    if name == "nftables":
        setup_nft(lab, out)
        return None
    raise ValueError(name)


def start_sinks(lab, name, out, tag, duration, cpus=None, sinks=None):
    """The sinks of a variant (`name`: what the frames arrive addressed to), or of the generators
    (name None: the sink's own address)."""
    dsr_like = name in ("ceiling", "xlb-dsr")
    procs = []
    for i, s in enumerate(sinks or lab.sinks, 1):
        addr = VIP if dsr_like else f"10.88.0.{10 + i}"
        use = cpus or lab.place.lab
        cores = cpu_list(use[k % len(use)] for k in range(lab.queues))
        procs.append(Tool(s, [PKTGEN, "sink", "-i", "eth0", "--queues", str(lab.queues), "--cores", cores,
                              "--addr", addr, "--duration", str(duration)], f"{tag}-sink-{i}", out, use))
    for s, p in zip(sinks or lab.sinks, procs):
        wait_until(f"XDP program on {s}'s eth0", lambda s=s: xdp_attached(s), 20, p)
    return procs


def sinks_result(procs, timeout):
    total, lat, docs = 0, [], []
    for p in procs:
        p.wait(timeout)
        doc = p.result()
        if "received" not in doc:
            raise Failed(f"{p.name}: its summary has no 'received': {json.dumps(doc)[:300]}")
        total += doc["received"]
        lat.append(doc.get("latency_us") or {})
        docs.append(doc)
    # Latency: the worst sink's percentile (they see the same traffic mix).
    worst = {k: max((lt.get(k) or 0) for lt in lat) for k in ("p50", "p99", "p999", "max")}
    return total, worst, docs


def send_cmd(lab, args, duration, core_list):
    return [PKTGEN, "send", "-i", "eth0", "--queues", str(lab.queues), "--cores", core_list, "--dst-mac", lab.mac[lab.lb],
            "--dst", f"{VIP}:{PORT}", "--src", "10.88.1.1", "--src-count", str(max(16, flows_of(args) // 40000 + 1)),
            "--duration", str(duration)] + args


def run_variant(lab, name, duration, out, gen_args, services=1, label=None):
    """One measurement: set the lb namespace up for `name`, send, collect. Never raises."""
    label = label or name
    tag = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")
    row = {"variant": name, "label": label, "services": services, "flows": flows_of(gen_args),
           "offered_pps": rate_of(gen_args) or None, "status": "ok"}
    place = lab.place
    server, sinks, sender = None, [], None
    t_start = time.time()
    try:
        lab.release()
        lab.pin_napi()
        server = start_lb(lab, name, services, out, tag, duration)
        sink_secs = duration + 2
        sinks = start_sinks(lab, name, out, tag, sink_secs)
        lab_cores = cpu_list(place.lab[i % len(place.lab)] for i in range(lab.queues))
        win = Window(lab, [server.pid] if server else [], lab.lb_napi)
        sender = Tool(lab.gen, send_cmd(lab, gen_args, duration, lab_cores), f"{tag}-send", out, place.lab)
        sender.wait(duration + 30)
        cpu = win.close(place)
        sent = sender.result()
        if sender.p.returncode != 0 or "sent" not in sent:
            raise Failed(f"pktgen send failed (status {sender.p.returncode}): {tail(sender.log, 800)}")
        delivered, latency, _ = sinks_result(sinks, sink_secs + 30)
        stats = None
        if server:
            rc = server.stop()
            if name.startswith("xlb-"):
                path = f"{out}/{tag}-stats.json"
                try:
                    with open(path) as f:
                        stats = json.load(f)
                except (OSError, ValueError) as e:
                    row["note"] = f"xlb wrote no readable --stats-file ({e}; exit status {rc}): no busy time"
        secs = sent["seconds"]
        row.update({
            "sent": sent["sent"], "sent_pps": sent["sent"] / secs, "delivered": delivered,
            "delivered_pps": delivered / secs, "loss": 1 - delivered / sent["sent"] if sent["sent"] else None,
            "latency_us": latency, "seconds": secs, "sender_warning": sent.get("warning"),
        })
        row["cpu"] = cpu_per_packet(cpu, stats, delivered, lab)
        if stats:
            c = stats.get("counters", {})
            row["xlb"] = {"forwarded": c.get("forwarded"), "rx_frames": c.get("rx_frames"), "batches": c.get("batches"),
                          "busy_ns": c.get("busy_ns"), "drops": {k: v for k, v in stats.get("drops", {}).items() if v}}
    except Failed as e:
        row.update(status="failed", error=str(e))
    except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
        row.update(status="failed", error=f"{type(e).__name__}: {e}")
    finally:
        for p in [sender] + sinks + [server]:
            if p is not None:
                p.stop(20)
        if name == "nftables":
            teardown_nft(lab)
    row["wall_s"] = time.time() - t_start
    print("  " + summary_line(row), flush=True)
    return row


def cpu_per_packet(w, stats, delivered, lab):
    """The LB's CPU time per packet it sent on: its own work (xlb: the workers' busy_ns over the
    packets they forwarded) and the kernel's (the LB's system time and the lb eth0's NAPI thread,
    over what the lb's eth0 transmitted in the same interval). User time beyond busy_ns is
    polling an empty ring."""
    kernel = w["system_s"] + w["napi_s"]
    counters = (stats or {}).get("counters", {})
    own = counters["busy_ns"] / 1e9 if "busy_ns" in counters else None
    forwarded = w["links"].get("lb_eth0", {}).get("tx") or delivered or None
    xlb_forwarded = counters.get("forwarded") or None

    def per(v, n=forwarded):
        return v * 1e9 / n if (n and v is not None) else None
    res = dict(w)
    res.update({
        "own_s": own,
        "lb_forwarded": forwarded,
        "ns_per_packet": {
            "own": per(own, xlb_forwarded), "kernel": per(kernel), "user": per(w["user_s"]),
            "kernel_receive": per(w["napi_s"]), "kernel_process": per(w["system_s"]),
            "polling": per(max(0.0, w["user_s"] - own * forwarded / xlb_forwarded))
            if (own is not None and xlb_forwarded and forwarded) else None,
        },
        "kernel_complete": bool(lab.lb_napi),
    })
    n = res["ns_per_packet"]
    n["work"] = n["own"] + n["kernel"] if (n["own"] is not None and n["kernel"] is not None) else None
    # busy_ns is wall time: a worker put off its CPU in the middle of a batch (by the NAPI
    # thread it shares the core with) counts that time too. The share of the time the workers
    # were runnable that they had the CPU says how much that can be.
    wanted = w["worker_on_cpu_s"] + w["worker_waiting_s"]
    res["worker_on_cpu_share"] = w["worker_on_cpu_s"] / wanted if wanted else None
    # Other work on the LB's cores (another user of the machine, stray softirqs): over 5% of
    # the window, the figures are flagged as shared.
    res["lb_cores_other"] = max(0.0, w["lb_cores_busy"] - w["lb_cores_ours"])
    return res


def summary_line(r):
    head = f"{r['label']:<28}"
    if r["status"] != "ok":
        return f"{head} FAILED: {' '.join(r['error'].split())[:400]}"
    lat = r["latency_us"]
    c = r["cpu"]["ns_per_packet"]
    cpu = f"kernel {fmt(c['kernel'], 0)} ns/pkt" + (f", xlb own {fmt(c['own'], 0)} ns/pkt" if c["own"] is not None else "")
    return (f"{head} sent {r['sent_pps'] / 1e6:.3f} Mpps, delivered {r['delivered_pps'] / 1e6:.3f} Mpps, "
            f"loss {100 * (r['loss'] or 0):.1f}%, {cpu}, LB core busy {100 * r['cpu']['lb_cores_busy']:.0f}%, "
            f"p50 {lat['p50']:.0f} us, p99 {lat['p99']:.0f} us")


def fmt(v, digits=3):
    return "n/a" if v is None else f"{v:,.{digits}f}"


def generators(lab, duration, out, size):
    """pktgen and trafgen, each alone on the first lab CPU, straight at the first sink, whose
    process and receive work (threaded NAPI) are moved to the LB CPUs for the occasion."""
    place = lab.place
    s = lab.sinks[0]
    dst_mac = lab.mac[s]
    core = place.lab[0]
    res = []
    other = place.lb if not place.shared else place.lab
    sink_napi = {}
    try:
        lab.release()
        sink_napi = lab.thread_napi(s, set(lab.lb_napi))
        lab.pin_napi(sink_napi, other)
    except (Failed, RuntimeError) as e:
        return [{"generator": g, "status": "failed", "error": str(e)} for g in ("pktgen", "trafgen")]

    def one(gen, start):
        row = {"generator": gen, "status": "ok", "core": core}
        sinks, proc = [], None
        try:
            lab.release()
            sinks = start_sinks(lab, None, out, f"gen-{gen}", duration + 2, cpus=other, sinks=[s])
            before = cpu_times()
            # The generator's own CPU time: its process tree's, from the rusage of reaped
            # children (the sinks are reaped later). Softirq work on its CPU (the bridge) is
            # charged to whatever it interrupted, mostly the generator.
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc, sent, secs = start()
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            after = cpu_times()
            got, _, _ = sinks_result(sinks, duration + 30)
            busy = {k: after[core][k] - before[core][k] for k in CPU_FIELDS}
            tot = sum(busy.values()) or 1e-9
            user, system = ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime
            row.update({"sent": sent, "sent_pps": sent / secs, "delivered": got, "delivered_pps": got / secs,
                        "seconds": secs, "core_busy": 1 - (busy["idle"] + busy["iowait"]) / tot,
                        "user_s": user, "system_s": system,
                        "user_ns_per_packet": user * 1e9 / sent if sent else None,
                        "kernel_ns_per_packet": system * 1e9 / sent if sent else None})
        except Failed as e:
            row.update(status="failed", error=str(e))
        except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            row.update(status="failed", error=f"{type(e).__name__}: {e}")
        finally:
            for p in sinks + ([proc] if proc else []):
                p.stop(10)
        if row["status"] == "ok":
            print(f"  {gen:<8} on CPU {core}: sent {row['sent_pps'] / 1e6:.3f} Mpps, delivered "
                  f"{row['delivered_pps'] / 1e6:.3f} Mpps, CPU {core} {100 * row['core_busy']:.0f}% busy, "
                  f"{fmt(row['user_ns_per_packet'], 0)} ns user + {fmt(row['kernel_ns_per_packet'], 0)} "
                  "ns kernel per packet", flush=True)
        else:
            print(f"  {gen:<8} FAILED: {' '.join(row['error'].split())[:400]}", flush=True)
        res.append(row)

    def pktgen():
        p = Tool(lab.gen, [PKTGEN, "send", "-i", "eth0", "--queues", "1", "--cores", str(core), "--dst-mac", dst_mac,
                           "--dst", f"10.88.0.11:{PORT}", "--src", "10.88.1.1", "--flows", "1024", "--size", str(size),
                           "--duration", str(duration)], "gen-pktgen-send", out, [core])
        p.wait(duration + 30)
        doc = p.result()
        if "sent" not in doc:
            raise Failed(f"pktgen send: no 'sent' in its summary: {json.dumps(doc)[:300]}")
        return p, doc["sent"], doc["seconds"]

    def trafgen():
        # The same 60-byte UDP frames (1024 source ports) from a PF_PACKET TX ring, one process.
        conf = f"{out}/trafgen.cfg"
        gen_mac = lab.mac[lab.gen]
        with open(conf, "w") as f:
            f.write("{\n"
                    f"  eth(da={dst_mac}, sa={gen_mac}, type=0x0800),\n"
                    "  ipv4(saddr=10.88.1.1, daddr=10.88.0.11, ttl=64, df),\n"
                    f"  udp(sport=dinc(10000, 11023), dport={PORT}, csum=0),\n"
                    f"  fill(0x00, {max(size - 42, 12)})\n"
                    "}\n")
        # trafgen stops ("Flushing TX_RING failed") when a send finds its socket's buffer full,
        # as it does here while the bridge and the sink hold its frames; it raises the default
        # buffer itself (to 4 MiB) but cannot from inside a namespace (the sysctl is the host's).
        # So the harness does it for trafgen's run, and puts the old value back.
        old = sh("sysctl", "-n", "net.core.wmem_default").stdout.strip()
        sh("sysctl", "-qw", "net.core.wmem_default=4194304")
        try:
            t0 = time.time()
            # trafgen prints its totals when interrupted; -Q: leave IRQ affinities alone.
            p = Tool(lab.gen, ["timeout", "-s", "INT", str(duration), "trafgen", "-o", "eth0", "-i", conf, "-P", "1",
                               "-Q"], "gen-trafgen", out, [core])
            p.wait(duration + 30)
            secs = time.time() - t0
        finally:
            sh("sysctl", "-qw", f"net.core.wmem_default={old}")
        text = tail(p.out, 20000) + "\n" + tail(p.log, 20000)
        m = re.search(r"(\d+)\s+packets outgoing", text)
        if not m:
            raise Failed(f"trafgen printed no 'packets outgoing' (status {p.p.returncode}): {text[-600:]}")
        return p, int(m.group(1)), secs

    one("pktgen", pktgen)
    if not shutil.which("trafgen"):
        res.append({"generator": "trafgen", "status": "failed", "error": "trafgen is not installed (scripts/setup.sh bench)"})
        print("  trafgen  FAILED: not installed", flush=True)
    else:
        one("trafgen", trafgen)
    # Back to the variants' layout: the sink's receive work on the lab CPUs again.
    ns_write(s, "/sys/class/net/eth0/threaded", 0)
    return res


# Reports.

def ok(rows):
    return [r for r in rows if r.get("status") == "ok"]


def ratio(a, b):
    return a / b if (a is not None and b) else None


def ratios(results):
    v = {r["variant"]: r for r in ok(results["variants"])}
    g = {r["generator"]: r for r in ok(results["generators"])}

    def work(name):
        r = v.get(name)
        if not r:
            return None
        c = r["cpu"]["ns_per_packet"]
        return c["work"] if c["work"] is not None else c["kernel"]

    def rate(name):
        return v[name]["delivered_pps"] if name in v else None

    def share(name):
        """The share of what the generator sent that reached the sinks."""
        loss = v[name]["loss"] if name in v else None
        return None if loss is None else 1 - loss
    return {
        "delivered xlb-dsr / ceiling": ratio(rate("xlb-dsr"), rate("ceiling")),
        "delivered xlb-snat / ceiling": ratio(rate("xlb-snat"), rate("ceiling")),
        "delivered xlb-dsr / nftables": ratio(rate("xlb-dsr"), rate("nftables")),
        "delivered xlb-snat / nftables": ratio(rate("xlb-snat"), rate("nftables")),
        "share delivered xlb-dsr / nftables": ratio(share("xlb-dsr"), share("nftables")),
        "share delivered xlb-snat / nftables": ratio(share("xlb-snat"), share("nftables")),
        "CPU per packet xlb-dsr / ceiling": ratio(work("xlb-dsr"), work("ceiling")),
        "CPU per packet xlb-snat / ceiling": ratio(work("xlb-snat"), work("ceiling")),
        "CPU per packet xlb-dsr / nftables": ratio(work("xlb-dsr"), work("nftables")),
        "CPU per packet xlb-snat / nftables": ratio(work("xlb-snat"), work("nftables")),
        "sent pktgen / trafgen": ratio(g.get("pktgen", {}).get("sent_pps"), g.get("trafgen", {}).get("sent_pps")),
    }


def sent_spread_md(rows):
    """A caution when the generator's rate differed between the variants by more than 10%."""
    sent = {r["label"]: r["sent_pps"] for r in ok(rows) if r.get("sent_pps")}
    if len(sent) < 2 or max(sent.values()) <= 1.1 * min(sent.values()):
        return []
    lo, hi = min(sent, key=sent.get), max(sent, key=sent.get)
    return ["", f"The generator's rate differed between the variants: {sent[lo] / 1e6:.3f} Mpps ({lo}) to "
                f"{sent[hi] / 1e6:.3f} Mpps ({hi}). It shares its CPU with the sinks and the bridge's receive work, "
                "whose load differs from variant to variant, so the delivered rates above compare runs offered "
                "different loads; compare the shares delivered (\"share delivered\", delivered / sent) too, bearing in mind that a lighter "
                "load also loses less."]


def mpps(r, key):
    return f"{r[key] / 1e6:.3f}" if r.get(key) is not None else "n/a"


def variant_table(rows):
    md = ["| variant | sent Mpps | delivered Mpps | loss | LB core busy | xlb own ns/pkt | kernel ns/pkt: receive + "
          "transmit | own + kernel ns/pkt | user ns/pkt (polling) |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["status"] != "ok":
            md.append(f"| {r['label']} | failed | | | | | | | |")
            continue
        c = r["cpu"]
        n = c["ns_per_packet"]
        busy = f"{100 * c['lb_cores_busy']:.0f}%" + (f" (shared: {100 * c['lb_cores_other']:.0f}% other work)"
                                                      if c["lb_cores_other"] > 0.05 else "")
        work = n["work"] if n["work"] is not None else n["kernel"]
        kernel = f"{fmt(n['kernel'], 0)}: {fmt(n['kernel_receive'], 0)} + {fmt(n['kernel_process'], 0)}"
        user = fmt(n["user"], 0) if n["polling"] is None else f"{fmt(n['user'], 0)} ({fmt(n['polling'], 0)})"
        if r["variant"] == "nftables":
            user = "-"
        md.append(f"| {r['label']} | {mpps(r, 'sent_pps')} | {mpps(r, 'delivered_pps')} | {100 * (r['loss'] or 0):.1f}% | "
                  f"{busy} | {fmt(n['own'], 0) if n['own'] is not None else '-'} | {kernel} | {fmt(work, 0)} | {user} |")
    return md


def loss_table(rows):
    md = ["| variant | sent | lost before the lb (veth ring full) | dropped in the lb's eth0 | the lb sent on | delivered |",
          "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["status"] != "ok":
            continue
        ln = r["cpu"]["links"]
        md.append(f"| {r['label']} | {r['sent']:,} | {ln.get('bridge_port', {}).get('tx_dropped', 0):,} | "
                  f"{ln.get('lb_eth0', {}).get('rx_dropped', 0):,} | {ln.get('lb_eth0', {}).get('tx', 0):,} | "
                  f"{r['delivered']:,} |")
    return md


def latency_table(rows, rate):
    md = [f"At an offered {rate:,} pps (below every variant's saturation):", "",
          "| variant | sent Mpps | delivered Mpps | loss | p50 us | p99 us | p99.9 us | max us | kernel ns/pkt | xlb own ns/pkt |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["status"] != "ok":
            md.append(f"| {r['variant']} | failed | | | | | | | | |")
            continue
        lt, n = r["latency_us"], r["cpu"]["ns_per_packet"]
        md.append(f"| {r['variant']} | {mpps(r, 'sent_pps')} | {mpps(r, 'delivered_pps')} | {100 * (r['loss'] or 0):.2f}% | "
                  f"{lt['p50']:.0f} | {lt['p99']:.0f} | {lt['p999']:.0f} | {lt['max']:.0f} | {fmt(n['kernel'], 0)} | "
                  f"{fmt(n['own'], 0) if n['own'] is not None else '-'} |")
    return md


def generator_table(rows):
    md = ["| generator (one CPU) | sent Mpps | delivered Mpps | its CPU busy | user ns/pkt | kernel ns/pkt |",
          "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["status"] != "ok":
            md.append(f"| {r['generator']} | failed | | | | |")
            continue
        md.append(f"| {r['generator']} | {mpps(r, 'sent_pps')} | {mpps(r, 'delivered_pps')} | {100 * r['core_busy']:.0f}% | "
                  f"{fmt(r['user_ns_per_packet'], 0)} | {fmt(r['kernel_ns_per_packet'], 0)} |")
    return md


def sweep_table(rows, what):
    md = [f"| {what} | sent Mpps | delivered Mpps | loss | xlb own ns/pkt | kernel ns/pkt | p99 us |",
          "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        key = f"{r['services']:,}" if what == "services" else f"{r['flows']:,}"
        if r["status"] != "ok":
            md.append(f"| {key} | failed | | | | | |")
            continue
        n = r["cpu"]["ns_per_packet"]
        md.append(f"| {key} | {mpps(r, 'sent_pps')} | {mpps(r, 'delivered_pps')} | {100 * (r['loss'] or 0):.1f}% | "
                  f"{fmt(n['own'], 0)} | {fmt(n['kernel'], 0)} | {r['latency_us']['p99']:.0f} |")
    return md


def placement_table(rows, place):
    cpus = sorted(set(place.lb) | set(place.lab))
    head = "| variant | " + " | ".join(f"CPU {c} ({'LB' if c in place.lb and not place.shared else 'lab'}) busy / "
                                      f"softirq / NET_RX" for c in cpus) + " |"
    md = [head, "| --- |" + " --- |" * len(cpus)]
    for r in rows:
        if r["status"] != "ok":
            continue
        pc = r["cpu"]["per_cpu"]
        cells = [f"{100 * pc[c]['busy']:.0f}% / {100 * pc[c]['softirq']:.0f}% / {pc[c]['net_rx']:,}" for c in cpus if c in pc]
        md.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    return md


def failures(results):
    rows = results["variants"] + results.get("variants_fixed_rate", []) + results["generators"] + \
        results["sweep_services"] + results["sweep_flows"]
    return [(r.get("label") or r.get("generator"), r["error"]) for r in rows if r.get("status") != "ok"]


def copy_cost(results):
    """The ceiling's kernel time per packet: what veth's copy-mode AF_XDP costs (receive into
    the UMEM, transmit out of it), measured, not quoted."""
    for r in ok(results["variants"]):
        if r["variant"] == "ceiling":
            return r["cpu"]["ns_per_packet"]
    return None


def copy_mode_md(results):
    """The measured kernel cost of veth's copy-mode AF_XDP: the AF_XDP variants' kernel time."""
    v = {r["variant"]: r for r in ok(results["variants"])}
    xdp = [(k, v[k]["cpu"]["ns_per_packet"]) for k in ("ceiling", "xlb-dsr", "xlb-snat") if k in v]
    xdp = [(k, n) for k, n in xdp if n["kernel"] is not None]
    if not xdp:
        return ["", "veth copy-mode AF_XDP cost: not measured (no AF_XDP variant ran)."]
    lo, hi = min(n["kernel"] for _, n in xdp), max(n["kernel"] for _, n in xdp)
    rx = [n["kernel_receive"] for _, n in xdp if n["kernel_receive"] is not None]
    each = ", ".join(f"{k} {fmt(n['kernel'], 0)}" for k, n in xdp)
    return ["", "veth has no zero-copy AF_XDP: in copy mode the kernel copies every frame into the UMEM on receive "
                "(after running XDP) and into a new skb on transmit, work a zero-copy NIC would not do. Measured here "
                f"as the AF_XDP variants' kernel time: **{fmt(lo, 0)} to {fmt(hi, 0)} ns per packet** ({each}), of "
                f"which the receive side, in the NAPI thread, is {fmt(min(rx), 0)} to {fmt(max(rx), 0)} ns."]


def xlb_vs_ceiling_md(results):
    """Says, from the run's own figures, why the ceiling forwarded less than xlb where it did."""
    v = {r["variant"]: r for r in ok(results["variants"])}
    md = []
    shares = [(k, v[k]["cpu"]["worker_on_cpu_share"]) for k in ("xlb-dsr", "xlb-snat") if k in v]
    shares = [(k, x) for k, x in shares if x is not None]
    if shares:
        md.append("xlb's workers had their CPU " + " and ".join(f"{100 * x:.0f}% ({k})" for k, x in shares) +
                  " of the time they were runnable; the NAPI thread and anything else on the core had it the rest.")
    if "ceiling" in v and any(x in v and v[x]["delivered_pps"] > v["ceiling"]["delivered_pps"] for x in ("xlb-dsr", "xlb-snat")):
        c = v["ceiling"]
        x = max((v[k] for k in ("xlb-dsr", "xlb-snat") if k in v), key=lambda r: r["delivered_pps"])

        def lost(r):
            return r["cpu"]["links"].get("bridge_port", {}).get("tx_dropped", 0)
        md.append(f"The ceiling delivered less than {x['variant']} here: pktgen forward polls its rings without pause "
                  f"({fmt(c['cpu']['ns_per_packet']['user'], 0)} ns of user time per packet against "
                  f"{fmt(x['cpu']['ns_per_packet']['user'], 0)} for {x['variant']}) on the core it shares with the "
                  f"NAPI thread that feeds it, and more frames were lost in veth's ring before it ({lost(c):,} against "
                  f"{lost(x):,}).")
    return ["", " ".join(md)] if md else []


def results_md(results, place, a):
    md = [f"# xlb benchmark {results['started']}", "",
          f"{results['cpus']} CPUs, {a.queues} queue(s) per host, {a.backends} sink(s), {a.size}-byte UDP frames, "
          f"{a.duration:g} s per run. Placement: {place.describe()}.", ""]
    md += body_md(results, place, a)
    return md


def body_md(results, place, a, level="##"):
    md = [f"{level} One load-balancer core each", "",
          "Each variant as fast as the generator goes. The generator and the sinks share the lab's CPU(s), so the "
          "offered rate is what those can push through the bridge twice; where the load balancer's core is not busy "
          "all the time (LB core busy), throughput says more about the generator than about the load balancer, "
          "and CPU per packet is the figure that compares them.", "",
          "CPU per packet is the load balancer's CPU time over the packets its eth0 sent on in the same interval:",
          "",
          "- xlb own: the workers' busy time (busy_ns, wall time inside batches) over the packets they forwarded. "
          "A worker put off its CPU in the middle of a batch (by the NAPI thread it shares the core with) counts "
          "that time too, so this is an upper bound (the workers' on-CPU share is in results.json).",
          "- kernel, receive: the lb eth0's NAPI thread: XDP and the copy into the UMEM (ceiling, xlb), or the "
          "whole DNAT, forwarding and transmit path (nftables).",
          "- kernel, transmit: the load balancer's system time: for AF_XDP the sendto() calls that kick "
          "transmission, in which the kernel copies each frame into an skb and transmits it on the veth. A worker "
          "also kicks while sent frames wait for completion, with nothing new to send, so this is an upper bound "
          "as well.",
          "- user (polling): user time; beyond busy_ns it is spinning on empty rings, not counted as cost.", ""]
    md += variant_table(results["variants"])
    md += copy_mode_md(results)
    md += xlb_vs_ceiling_md(results)
    md += ["", "Where the packets that were not delivered went (counters of the lb's eth0 and its bridge port over the "
               "run; \"dropped in the lb's eth0\" are veth's receive drops: for the AF_XDP variants, frames XDP could not "
               "redirect, as into a full AF_XDP ring):", ""]
    md += loss_table(results["variants"])
    md += ["", "| ratio | value |", "| --- | --- |"]
    for k, val in results["ratios"].items():
        md.append(f"| {k} | {fmt(val, 2)} |")
    md += sent_spread_md(results["variants"])
    if results.get("variants_fixed_rate"):
        md += ["", f"{level} Latency at a fixed rate", ""] + latency_table(results["variants_fixed_rate"], a.fixed_rate)
        md += ["", "Latency is the sink's receive time less the generator's timestamp in the frame (one clock). The "
                   "sinks share the lab's CPU(s) with the generator and the bridge's softirqs, so the tail may include "
                   "their waits for it. Kernel time per packet is higher at this rate than at full load: each wake-up of "
                   "the NAPI thread and of the load balancer carries fewer frames."]
    md += ["", f"{level} Generators: pktgen and trafgen", "",
           "Each alone on one CPU, straight at one sink (whose thread and NAPI run on the other CPUs).", ""]
    md += generator_table(results["generators"])
    g = {r["generator"]: r for r in ok(results["generators"])}
    if "pktgen" in g and "trafgen" in g:
        if g["pktgen"]["sent_pps"] < g["trafgen"]["sent_pps"]:
            md += ["", "pktgen sends less than trafgen here. On veth neither has zero copy: pktgen's copy-mode AF_XDP "
                       "and trafgen's PF_PACKET TX ring both pay one copy per frame into a new skb in the kernel (the "
                       "kernel ns/pkt column), so pktgen's ring design buys nothing on this path; what it still pays on "
                       "top is its own user-space work (building each frame with a timestamp and flow number: the user "
                       "ns/pkt column)."]
        else:
            md += ["", "On veth neither generator has zero copy: pktgen's copy-mode AF_XDP and trafgen's PF_PACKET TX "
                       "ring both pay one copy per frame into a new skb in the kernel (the kernel ns/pkt column)."]
    if results["sweep_services"] or results["sweep_flows"]:
        md += ["", f"{level} Services and flows (xlb DSR)", ""]
        if results["sweep_services"]:
            md += sweep_table(results["sweep_services"], "services") + [""]
        if results["sweep_flows"]:
            md += sweep_table(results["sweep_flows"], "flows") + [""]
    md += ["", f"{level} How the cores were split (checked)", "",
           f"{place.describe()}. Steering: RPS on the bridge ports to CPU mask {results['steering'].get('bridge_ports_rps_cpus')}; "
           f"the lb's eth0 in threaded NAPI ({', '.join(results['steering'].get('lb_eth0_napi_threads') or ['none'])}) "
           f"pinned to CPU {cpu_list(place.lb)}, at nice 0 like ksoftirqd: a polling load balancer shares its core "
           "with it (at nice -20 it starved the poller, and frames it had copied were dropped at the full AF_XDP "
           "ring); frames that find veth's 256-frame ring into the lb full are lost before the load balancer." + (f" Warning: {results['steering']['warning']}." if results['steering'].get('warning') else ""),
           "Per CPU over each measured run: busy time, softirq time, NET_RX softirqs raised (threaded NAPI runs "
           "outside softirqs, so the LB CPU's receive work shows as busy time, not NET_RX).", ""]
    md += placement_table(results["variants"] + results.get("variants_fixed_rate", []), place)
    fails = failures(results)
    if fails:
        md += ["", f"{level} Failed", ""] + [f"- {label}: {' '.join(err.split())}" for label, err in fails]
    return md


# The plot: CPU per packet by variant, and the sweeps.

def svg_plot(path, results):
    w, h, pad = 360, 260, 52
    colors = {"own": "#1f77b4", "kernel": "#ff7f0e"}

    def esc(s):
        return html.escape(str(s))

    def frame(x0, title, ylabel, xlabel):
        return [f'<text x="{x0 + w / 2}" y="18" text-anchor="middle" font-size="13">{esc(title)}</text>',
                f'<line x1="{x0 + pad}" y1="{h - pad}" x2="{x0 + w - 12}" y2="{h - pad}" stroke="black"/>',
                f'<line x1="{x0 + pad}" y1="{pad - 20}" x2="{x0 + pad}" y2="{h - pad}" stroke="black"/>',
                f'<text x="{x0 + w / 2}" y="{h - 8}" text-anchor="middle" font-size="11">{esc(xlabel)}</text>',
                f'<text x="{x0 + 13}" y="{h / 2}" font-size="11" transform="rotate(-90 {x0 + 13} {h / 2})" '
                f'text-anchor="middle">{esc(ylabel)}</text>']

    def bars(x0):
        rows = [r for r in ok(results["variants"])]
        s = frame(x0, "Load balancer CPU per packet (one core)", "ns per packet", "variant")
        if not rows:
            return s
        vals = [(r["variant"], r["cpu"]["ns_per_packet"]["own"] or 0, r["cpu"]["ns_per_packet"]["kernel"] or 0) for r in rows]
        ymax = max(o + k for _, o, k in vals) * 1.45 or 1
        bw = (w - pad - 20) / len(vals)

        def Y(v):
            return h - pad - v / ymax * (h - 2 * pad + 20)
        for i, (name, own, kern) in enumerate(vals):
            x = x0 + pad + 8 + i * bw
            s.append(f'<rect x="{x:.1f}" y="{Y(kern):.1f}" width="{bw - 16:.1f}" height="{h - pad - Y(kern):.1f}" '
                     f'fill="{colors["kernel"]}"/>')
            if own:
                s.append(f'<rect x="{x:.1f}" y="{Y(kern + own):.1f}" width="{bw - 16:.1f}" '
                         f'height="{Y(kern) - Y(kern + own):.1f}" fill="{colors["own"]}"/>')
            s.append(f'<text x="{x + (bw - 16) / 2:.1f}" y="{Y(kern + own) - 4:.1f}" text-anchor="middle" '
                     f'font-size="10">{kern + own:,.0f}</text>')
            s.append(f'<text x="{x + (bw - 16) / 2:.1f}" y="{h - pad + 14}" text-anchor="middle" font-size="10">{esc(name)}</text>')
        s.append(f'<rect x="{x0 + w - 120}" y="30" width="10" height="10" fill="{colors["kernel"]}"/>'
                 f'<text x="{x0 + w - 106}" y="39" font-size="10">kernel</text>')
        s.append(f'<rect x="{x0 + w - 120}" y="44" width="10" height="10" fill="{colors["own"]}"/>'
                 f'<text x="{x0 + w - 106}" y="53" font-size="10">xlb own (busy)</text>')
        return s

    def sweep(x0, title, rows, key, xlabel):
        s = frame(x0, title, "ns per packet", xlabel)
        pts = [(r[key], r["cpu"]["ns_per_packet"]["own"] or 0, r["cpu"]["ns_per_packet"]["kernel"] or 0,
                r["delivered_pps"]) for r in ok(rows)]
        if not pts:
            return s
        ymax = max(o + k for _, o, k, _ in pts) * 1.2 or 1
        xs = [math.log10(p[0]) for p in pts]
        xmin, xmax = min(xs), (max(xs) if max(xs) > min(xs) else min(xs) + 1)

        def X(v):
            return x0 + pad + 20 + (math.log10(v) - xmin) / (xmax - xmin) * (w - 2 * pad - 20)

        def Y(v):
            return h - pad - v / ymax * (h - 2 * pad + 20)
        for series, fn in (("kernel", lambda p: p[2] + p[1]), ("own", lambda p: p[1])):
            line = " ".join(f"{X(p[0]):.1f},{Y(fn(p)):.1f}" for p in pts)
            s.append(f'<polyline points="{line}" fill="none" stroke="{colors[series]}" stroke-width="2"/>')
            for p in pts:
                s.append(f'<circle cx="{X(p[0]):.1f}" cy="{Y(fn(p)):.1f}" r="3" fill="{colors[series]}"/>')
                s.append(f'<text x="{X(p[0]):.1f}" y="{Y(fn(p)) - 6:.1f}" text-anchor="middle" font-size="9">{fn(p):,.0f}</text>')
        for p in pts:
            s.append(f'<text x="{X(p[0]):.1f}" y="{h - pad + 13}" text-anchor="middle" font-size="10">{p[0]:,}</text>')
            s.append(f'<text x="{X(p[0]):.1f}" y="{h - pad + 25}" text-anchor="middle" font-size="9">'
                     f'{p[3] / 1e6:.3f} Mpps</text>')
        s.append(f'<text x="{x0 + pad + 6}" y="{pad - 22}" font-size="9">top: own + kernel; bottom: own</text>')
        return s

    parts = bars(0) + sweep(w, "xlb DSR: services", results["sweep_services"], "services", "services (log)") + \
        sweep(2 * w, "xlb DSR: concurrent flows", results["sweep_flows"], "flows", "flows (log)")
    with open(path, "w") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{3 * w}" height="{h}" font-family="sans-serif">\n'
                f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(parts) + "\n</svg>\n")


# docs/benchmarks.md

PATHCOST_HEAD = "## Instructions per packet"
# scripts/pathcost.sh --publish replaces what lies between the two markers.
PATHCOST_DEFAULT = [PATHCOST_HEAD, "",
                    "Filled by `scripts/pathcost.sh --publish` (callgrind over the datapath) between the markers below; "
                    "`make bench-publish` keeps this section as it finds it.", "",
                    "<!-- pathcost -->", "Not filled in yet.", "<!-- /pathcost -->"]


def kept_pathcost(path):
    """The "Instructions per packet" section of an existing docs/benchmarks.md, as it is."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return PATHCOST_DEFAULT
    try:
        start = lines.index(PATHCOST_HEAD)
    except ValueError:
        return PATHCOST_DEFAULT
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    section = lines[start:end]
    while section and not section[-1].strip():
        section.pop()
    return section


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        pass

    def run(*cmd):
        try:
            return subprocess.run(list(cmd), capture_output=True, text=True, cwd=ROOT, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    commit = run("git", "rev-parse", "--short", "HEAD")
    dirty = run("git", "status", "--porcelain", "--untracked-files=no")
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": os.uname().release, "memory_gib": mem,
            "commit": commit + (" (with uncommitted changes)" if dirty else ""), "rustc": run("rustc", "--version")}


def publish(results, place, a, out):
    docs = os.path.join(ROOT, "docs")
    path = os.path.join(docs, "benchmarks.md")
    m = results["machine"]
    argv = " ".join(sys.argv[1:])
    md = ["# Benchmarks", "",
          "Generated by `make bench-publish` (as root): one run of bench/harness.py on the netns lab, whose "
          "figures are every section from Setup on, measured on the machine described there; then "
          "scripts/pathcost.sh, which fills the instruction counts. The first section's other tables (memory "
          "per service, the flow table) come from the commands it names.", ""]
    md += kept_pathcost(path)
    md += ["", "## Setup", "",
           f"- Date: {results['date']}",
           f"- Machine: {m['nproc']} CPUs (`nproc`), {m['cpu_model']} (/proc/cpuinfo), "
           f"{fmt(m['memory_gib'], 0)} GiB memory, Linux {m['kernel']}",
           f"- xlb commit {m['commit']}, {m['rustc']}",
           "- Commands: `make bench-publish`, which runs `cargo build --release --workspace`, "
           f"`bash scripts/setup.sh bench` and `python3 bench/harness.py {argv}` "
           "(`make bench` is the same run without --publish: results under target/bench/ only)",
           f"- Lab: network namespaces on one Linux bridge, veth with {a.queues} queue(s) (copy-mode AF_XDP, native "
           f"XDP), {a.backends} sink(s), {a.size}-byte UDP frames, {a.duration:g} s per run, 1,024 flows unless said",
           f"- Placement: {place.describe()}"]
    if results.get("contention"):
        md.append(f"- Note: {results['contention']}")
    md += [""]
    md += body_md(results, place, a)
    md += ["", "![CPU per packet by variant, and xlb DSR against services and flows](bench.svg)", "",
           "## Scaling across cores", "",
           "The --queues K run (K = 1, 2, 4, 8: K load-balancer cores, and K for the generator and sinks) needs a "
           "16-core machine. It has not been run: no machine with enough cores was available, so there are no "
           "figures for it here. It is prepared to run in one go on such a machine without iproute2 or a "
           "package registry: `scripts/device-bundle.sh` collects the builds and the lab's tools into .device/, "
           "and `scripts/device-scaling.sh` (run there, with .device/) checks the lab can be built, runs the "
           "four variants for each K and writes the table (scaling.md).", ""]
    with open(path, "w") as f:
        f.write("\n".join(md).rstrip() + "\n")
    svg_plot(os.path.join(docs, "bench.svg"), results)
    print(f"published: {path}, {os.path.join(docs, 'bench.svg')}")


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
    ap.add_argument("--only", default="", help="comma-separated sections to run: variants,fixed,generators,sweeps")
    ap.add_argument("--publish", action="store_true", help="also write docs/benchmarks.md and docs/bench.svg")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("harness: needs root (network namespaces, XDP, AF_XDP)")
    for b, var in ((XLB, "XLB_BIN"), (PKTGEN, "PKTGEN_BIN")):
        if not os.access(b, os.X_OK):
            sys.exit(f"harness: {b} ({var}) is not there: name another build with {var}" if os.environ.get(var)
                     else f"harness: {b} is not built; run `make bench`")
    only = set(filter(None, a.only.split(","))) or {"variants", "fixed", "generators", "sweeps"}
    started = datetime.datetime.now()
    out = os.path.join(a.out, started.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(out, exist_ok=True)
    ncpu = os.cpu_count()
    place = Placement(ncpu, a.queues, a.backends)
    print(f"harness: {place.describe()}", flush=True)
    try:
        lab = Lab(a.queues, a.backends, place)
    except LabError as e:
        sys.exit(f"harness: {e}")
    if lab.steering.get("warning"):
        print(f"harness: warning: {lab.steering['warning']}", flush=True)
    gen = ["--flows", "1024", "--size", str(a.size)] + (["--rate", str(a.rate)] if a.rate else [])
    results = {"started": out.rsplit("/", 1)[1], "date": started.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "cpus": ncpu, "queues": a.queues, "backends": a.backends, "duration_s": a.duration, "frame_size": a.size,
               "placement": {"lb_cpus": place.lb, "lab_cpus": place.lab, "shared": place.shared, "notes": place.notes},
               "contention": None if not place.shared else place.notes[0], "steering": lab.steering,
               "machine": machine(), "argv": sys.argv[1:], "variants": [], "generators": [],
               "sweep_services": [], "sweep_flows": []}
    # Interrupted (SIGINT, as `timeout -s INT` sends), it still writes what it measured: the
    # runs that finished are kept, the one under way is stopped and left out.
    interrupted = False
    try:
        if "variants" in only:
            print(f"variants ({a.queues} queue(s), {a.backends} sink(s), {a.duration:g} s each):", flush=True)
            for v in VARIANTS:
                results["variants"].append(run_variant(lab, v, a.duration, out, gen))
        if a.fixed_rate and "fixed" in only:
            print(f"variants at an offered {a.fixed_rate} pps:", flush=True)
            fixed = ["--flows", "1024", "--size", str(a.size), "--rate", str(a.fixed_rate)]
            results["variants_fixed_rate"] = [run_variant(lab, v, a.duration, out, fixed, label=f"{v} at {a.fixed_rate} pps")
                                              for v in VARIANTS]
        if "generators" in only:
            print("generators:", flush=True)
            results["generators"] = generators(lab, a.duration, out, a.size)
        if not a.quick and "sweeps" in only:
            print("xlb DSR against services and flows:", flush=True)
            for n in (1, 100, 10000):
                args = gen[:] + ["--dports", str(n)]
                results["sweep_services"].append(run_variant(lab, "xlb-dsr", a.duration, out, args, services=n,
                                                             label=f"xlb-dsr, {n} services"))
            for f in (1000, 1000000):
                args = ["--flows", str(f), "--size", str(a.size)] + (["--rate", str(a.rate)] if a.rate else [])
                results["sweep_flows"].append(run_variant(lab, "xlb-dsr", a.duration, out, args, label=f"xlb-dsr, {f:,} flows"))
    except KeyboardInterrupt:
        interrupted = True
        print("harness: interrupted; writing the runs that finished", flush=True)
    finally:
        lab.close()
    results["interrupted"] = interrupted
    results["ratios"] = ratios(results)
    cc = copy_cost(results)
    results["veth_copy_mode_kernel_ns_per_packet"] = cc["kernel"] if cc else None
    results["failed"] = [{"run": label, "reason": err} for label, err in failures(results)]
    with open(f"{out}/results.json", "w") as f:
        json.dump(results, f, indent=2)
    md = results_md(results, place, a)
    with open(f"{out}/results.md", "w") as f:
        f.write("\n".join(md) + "\n")
    svg_plot(f"{out}/plot.svg", results)
    print("\n".join(md))
    print(f"\nresults: {out}/results.json, results.md, plot.svg")
    if interrupted:
        sys.exit("harness: interrupted before every run finished (results.json holds those that did)")
    if a.publish:
        publish(results, place, a, out)
    runs = results["variants"] + results.get("variants_fixed_rate", []) + results["generators"] + \
        results["sweep_services"] + results["sweep_flows"]
    if runs and not ok(runs):
        sys.exit("harness: every run failed")


if __name__ == "__main__":
    main()
