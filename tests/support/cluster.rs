//! Kubernetes worker nodes in the netns lab, with pods behind them and a REAL kube-proxy
//! (built by scripts/k8s/apiserver.sh) in each: what users' clusters look like to a load
//! balancer in front of them (Kubernetes issue 19: traffic reaches pods through the nodes'
//! service proxy).
//!
//! - [`Worker`]: a lab host on the LAN with IP forwarding on, a pod CIDR that is not on the
//!   LAN (worker i: 10.244.i.0/24) and pods behind it, each its own namespace on a veth pair,
//!   wired the way the `ptp` CNI plugin wires them: the node's end of every pair holds the
//!   gateway 10.244.i.1/32 and a /32 route to its pod; a pod holds 10.244.i.(10+k)/24, with
//!   its subnet and its default route via the gateway (so pods of one node reach each other
//!   through the node, as across nodes). Each pod runs tests/support/servers.py on one port:
//!   TCP answers "POD-NAME PEER-ADDRESS", UDP echoes with the pod's name in front.
//! - [`route_pod_cidrs`]: host-gw routing, each worker's pod CIDR via its LAN address on the
//!   other workers, so any worker reaches any pod (what flannel's host-gw backend does).
//! - [`node_object`] / [`Worker::register`]: the Node objects (there is no kubelet): InternalIP,
//!   podCIDR, condition Ready=True, labels.
//! - [`Worker::start_kube_proxy`]: kube-proxy in the worker's namespace, nftables mode, as the
//!   admin, with the flags that keep it inside that namespace (see [`KUBE_PROXY_FLAGS`]).
//! - [`endpoint_slice`]: a Service's EndpointSlice from (pod address, node, ready) (there is no
//!   EndpointSlice controller either).
//! - [`Worker::add_ipv6`]: the same over IPv6 (LAN fd77::/64, pod CIDRs fd44:i::/64), for a
//!   dual-stack node and kube-proxy.
//!
//! Everything lives in namespaces of the [`Lab`] (named after it, deleted with it, their
//! processes killed); kube-proxy is also killed when its [`Worker`] drops. iptables mode is not
//! offered: it needs the iptables binaries, which the lab machines do not install.

use std::{
    fs,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use super::{kube::Api, link_mac, run, start_servers, traffic::in_netns, Host, Lab};

/// kube-proxy's health and metrics ports, on 127.0.0.1 inside the worker's namespace.
const HEALTHZ: &str = "127.0.0.1:10256";
const METRICS: &str = "127.0.0.1:10249";

/// The flags every lab kube-proxy gets besides `--hostname-override` (its Node's name: which
/// endpoints are local, for externalTrafficPolicy Local, and its node IP from the Node's
/// InternalIP) and `--kubeconfig` (the admin's), and why:
/// - `--proxy-mode=nftables`: the mode under test (Kubernetes' newest; iptables is the
///   default, and needs the iptables binaries, which the lab does not install).
/// - `--cluster-cidr`: the pods' range, so that kube-proxy tells pod traffic from outside
///   traffic (`--detect-local-mode` defaults to ClusterCIDR and is off without it). Not
///   needed by the external traffic the tests send (masqueraded or not by policy alone).
/// - `--conntrack-max-per-core=0`: leaves the conntrack table's size alone. Otherwise
///   kube-proxy raises `nf_conntrack_max` (read-only in a child namespace) and, first, the
///   hash size in /sys/module/nf_conntrack/parameters/hashsize, which is global: a worker
///   would resize the host's table when it is smaller than kube-proxy wants.
/// - `--conntrack-tcp-timeout-established=0`, `--conntrack-tcp-timeout-close-wait=0`: leave
///   those timeouts as they are. Without them kube-proxy sets them (86400 s and 3600 s); on
///   the lab's kernels they are per namespace (checked: the host's stay as they were), so
///   this only keeps the lab from depending on that.
/// - `--healthz-bind-address`, `--metrics-bind-address`: loopback of the worker's namespace
///   (the health default is 0.0.0.0, which works too but listens on the LAN).
/// - `--oom-score-adj=0`: kube-proxy would otherwise make itself nearly unkillable by the
///   OOM killer (-999), a host-wide effect a test has no business having.
///
/// Nothing else is needed in a namespace: it finds its node IP in the Node object, the
/// `nft` binary on PATH, and its first sync takes about 0.3-0.4 s.
pub const KUBE_PROXY_FLAGS: &[&str] = &[
    "--proxy-mode=nftables",
    "--cluster-cidr=10.244.0.0/16",
    "--conntrack-max-per-core=0",
    "--conntrack-tcp-timeout-established=0",
    "--conntrack-tcp-timeout-close-wait=0",
    "--healthz-bind-address=127.0.0.1:10256",
    "--metrics-bind-address=127.0.0.1:10249",
    "--oom-score-adj=0",
];

/// A pod: its own namespace behind a worker, serving TCP and UDP on the worker's pod port.
#[derive(Clone, Debug)]
pub struct Pod {
    /// Its name, also what its servers answer with (e.g. `worker-1-pod-0`).
    pub name: String,
    /// Its namespace.
    pub ns: String,
    /// Its address in the worker's pod CIDR.
    pub ip: Ipv4Addr,
    /// The Node it runs on.
    pub node: String,
    /// Its IPv6 address, once [`Worker::add_ipv6`] gave it one.
    pub ip6: Option<Ipv6Addr>,
}

/// A worker node: a lab host with pods behind it and, once started, kube-proxy.
pub struct Worker {
    /// Its Node name (also kube-proxy's `--hostname-override`), e.g. `worker-1`.
    pub name: String,
    pub host: Host,
    /// Its address on the LAN (the Node's InternalIP).
    pub ip: Ipv4Addr,
    /// Its pod CIDR, 10.244.i.0/24.
    pub pod_cidr: String,
    /// The pods' gateway, 10.244.i.1: the worker's own address on the pods' side (the source
    /// a pod sees for traffic the worker masquerades towards it).
    pub gateway: Ipv4Addr,
    pub pods: Vec<Pod>,
    /// Its IPv6 address on the LAN and its IPv6 pod CIDR, once [`Worker::add_ipv6`] ran.
    pub ip6: Option<(Ipv6Addr, String)>,
    kube_proxy: Option<KubeProxy>,
}

impl Worker {
    /// Worker `index` (1..=254): host `worker-INDEX` on the LAN at `lan_ip/24`, IP forwarding
    /// on, `pods` pods at 10.244.INDEX.10 on, each serving TCP and UDP on `port`.
    pub fn new(lab: &mut Lab, index: u8, lan_ip: Ipv4Addr, pods: usize, port: u16) -> Worker {
        let name = format!("worker-{index}");
        let host = lab.host(&name, &[&format!("{lan_ip}/24")], 1);
        run("ip", &["netns", "exec", &host.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let gateway = Ipv4Addr::new(10, 244, index, 1);
        let pod_cidr = format!("10.244.{index}.0/24");
        let gw = gateway.to_string();
        let mut list = Vec::new();
        for k in 0..pods {
            let pod_name = format!("{name}-pod-{k}");
            let ns = lab.add_ns(&pod_name);
            let ip = Ipv4Addr::new(10, 244, index, 10 + u8::try_from(k).unwrap());
            let ip_s = ip.to_string();
            let veth = format!("vp{k}");
            let w = host.ns.as_str();
            run("ip", &["-n", w, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            run("ip", &["-n", w, "addr", "add", &format!("{gw}/32"), "dev", &veth]);
            run("ip", &["-n", w, "link", "set", &veth, "up"]);
            run("ip", &["-n", w, "route", "add", &format!("{ip_s}/32"), "dev", &veth]);
            run("ip", &["-n", &ns, "addr", "add", &format!("{ip_s}/24"), "dev", "eth0"]);
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            run("ip", &["-n", &ns, "route", "add", &gw, "dev", "eth0", "scope", "link"]);
            run("ip", &["-n", &ns, "route", "replace", &pod_cidr, "via", &gw, "dev", "eth0"]);
            run("ip", &["-n", &ns, "route", "add", "default", "via", &gw, "dev", "eth0"]);
            let pod_host = Host { ns: ns.clone(), mac: link_mac(&ns, "eth0") };
            start_servers(lab, &pod_host, &pod_name, port, false, None);
            list.push(Pod { name: pod_name, ns, ip, node: name.clone(), ip6: None });
        }
        Worker { name, host, ip: lan_ip, pod_cidr, gateway, pods: list, ip6: None, kube_proxy: None }
    }

    /// Makes the worker dual-stack: `lan_ip6`/64 on the LAN, IPv6 forwarding, the pod CIDR
    /// fd44:INDEX::/64 with the gateway fd44:INDEX::1 on the node's end of each pod's pair,
    /// each pod fd44:INDEX::(10+k) with its default route there, and servers.py on `port`
    /// over IPv6 (its own port: a dual-stack socket on the IPv4 port would see IPv4 clients
    /// as mapped addresses). Before [`Worker::register`] and [`Worker::start_kube_proxy`]:
    /// the Node and kube-proxy then have both families.
    pub fn add_ipv6(&mut self, lab: &Lab, index: u8, lan_ip6: Ipv6Addr, port: u16) {
        let w = self.host.ns.clone();
        run("ip", &["-n", &w, "addr", "add", &format!("{lan_ip6}/64"), "dev", "eth0", "nodad"]);
        run("ip", &["netns", "exec", &w, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        let gw = Ipv6Addr::new(0xfd44, u16::from(index), 0, 0, 0, 0, 0, 1);
        let cidr = format!("fd44:{index}::/64");
        for (k, pod) in self.pods.iter_mut().enumerate() {
            let ip = Ipv6Addr::new(0xfd44, u16::from(index), 0, 0, 0, 0, 0, 0x10 + u16::try_from(k).unwrap());
            let veth = format!("vp{k}");
            run("ip", &["-n", &w, "addr", "add", &format!("{gw}/128"), "dev", &veth, "nodad"]);
            run("ip", &["-n", &w, "-6", "route", "add", &format!("{ip}/128"), "dev", &veth]);
            run("ip", &["-n", &pod.ns, "addr", "add", &format!("{ip}/64"), "dev", "eth0", "nodad"]);
            run("ip", &["-n", &pod.ns, "-6", "route", "add", &gw.to_string(), "dev", "eth0"]);
            run("ip", &["-n", &pod.ns, "-6", "route", "replace", &cidr, "via", &gw.to_string(), "dev", "eth0"]);
            run("ip", &["-n", &pod.ns, "-6", "route", "add", "default", "via", &gw.to_string(), "dev", "eth0"]);
            let pod_host = Host { ns: pod.ns.clone(), mac: link_mac(&pod.ns, "eth0") };
            start_servers(lab, &pod_host, &format!("{}-v6", pod.name), port, true, None);
            pod.ip6 = Some(ip);
        }
        self.ip6 = Some((lan_ip6, cidr));
    }

    /// Writes this worker's Node object (see [`node_object`]) with `labels`; with both
    /// families after [`Worker::add_ipv6`].
    pub fn register(&self, api: &Api, labels: &[(&str, &str)]) {
        let mut ips = vec![IpAddr::V4(self.ip)];
        let mut cidrs = vec![self.pod_cidr.as_str()];
        if let Some((ip6, cidr6)) = &self.ip6 {
            ips.push(IpAddr::V6(*ip6));
            cidrs.push(cidr6);
        }
        node_object(api, &self.name, &ips, &cidrs, labels);
    }

    /// Starts kube-proxy in the worker's namespace as the cluster admin (the API server
    /// relayed to 127.0.0.1 there, [`Api::reach_from`]) and waits until it has synced its
    /// rules once: /healthz answers 200 and the nftables table `ip kube-proxy` exists. Panics
    /// with its log otherwise. Its log is `LAB_DIR/kube-proxy-NAME.log`.
    pub fn start_kube_proxy(&mut self, lab: &Lab, api: &Api) {
        assert!(self.kube_proxy.is_none(), "{}: kube-proxy already runs", self.name);
        api.reach_from(&self.host.ns);
        let bin = api.kubectl.with_file_name("kube-proxy");
        let log = lab.dir.join(format!("kube-proxy-{}.log", self.name));
        let hostname = format!("--hostname-override={}", self.name);
        let kubeconfig = format!("--kubeconfig={}", api.admin);
        let mut args: Vec<&str> = vec!["netns", "exec", &self.host.ns];
        let bin_s = bin.to_string_lossy().into_owned();
        args.push(&bin_s);
        args.extend(KUBE_PROXY_FLAGS);
        args.extend([hostname.as_str(), kubeconfig.as_str(), "--v=2"]);
        let out = fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin_s}: {e}"));
        let mut kp = KubeProxy { child: Some(child), log, ns: self.host.ns.clone(), node: self.name.clone() };
        let t0 = Instant::now();
        kp.wait("its first sync (/healthz 200 and table ip kube-proxy)", Duration::from_secs(30), |kp| {
            kp.healthz() == Some(200) && kp.ruleset().is_some()
        });
        println!("{}: kube-proxy (nftables) synced {:?} after its start", self.name, t0.elapsed());
        self.kube_proxy = Some(kp);
    }

    /// The running kube-proxy (panics if none was started).
    pub fn kube_proxy(&mut self) -> &mut KubeProxy {
        self.kube_proxy.as_mut().unwrap_or_else(|| panic!("no kube-proxy started"))
    }

    /// The endpoints of its pods, for [`endpoint_slice`]: (address, node, `ready`).
    pub fn endpoints(&self, ready: bool) -> Vec<(IpAddr, String, bool)> {
        self.pods.iter().map(|p| (IpAddr::V4(p.ip), p.node.clone(), ready)).collect()
    }

    /// The IPv6 endpoints of its pods (after [`Worker::add_ipv6`]).
    pub fn endpoints6(&self, ready: bool) -> Vec<(IpAddr, String, bool)> {
        self.pods.iter().filter_map(|p| Some((IpAddr::V6(p.ip6?), p.node.clone(), ready))).collect()
    }
}

/// A kube-proxy process in a worker's namespace; killed on drop.
pub struct KubeProxy {
    child: Option<Child>,
    /// Its stdout and stderr.
    pub log: PathBuf,
    ns: String,
    node: String,
}

impl KubeProxy {
    /// Its log so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its log's warnings and errors: klog entries whose line starts with W or E, with their
    /// continuation lines (a multi-line value, `err=<` ... `>`).
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut inside = false;
        for l in self.log_text().lines() {
            if l.starts_with(char::is_whitespace) || l == ">" {
                if inside {
                    let last = out.last_mut().unwrap();
                    last.push('\n');
                    last.push_str(l);
                }
            } else {
                inside = l.starts_with('W') || l.starts_with('E');
                if inside {
                    out.push(l.to_string());
                }
            }
        }
        out
    }

    /// The HTTP status of its /healthz, `None` when it does not answer.
    pub fn healthz(&self) -> Option<u16> {
        http_status(&self.ns, HEALTHZ, "/healthz")
    }

    /// Its `nft list table ip kube-proxy` in the worker's namespace, `None` while the table
    /// does not exist.
    pub fn ruleset(&self) -> Option<String> {
        self.table("ip")
    }

    /// Its table of `family` (`ip`, `ip6`), `None` while it does not exist.
    pub fn table(&self, family: &str) -> Option<String> {
        let out =
            Command::new("ip").args(["netns", "exec", &self.ns, "nft", "list", "table", family, "kube-proxy"]).output();
        out.ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Its metrics (Prometheus text) from the worker's namespace.
    pub fn metrics(&self) -> String {
        http_get(&self.ns, METRICS, "/metrics").map(|(_, body)| body).unwrap_or_default()
    }

    /// Waits until its nftables table contains `needle` (e.g. a Service's VIP once it has
    /// endpoints); panics with the table and its log otherwise.
    pub fn wait_rules(&mut self, needle: &str, timeout: Duration) {
        let family = if needle.contains(':') { "ip6" } else { "ip" };
        self.wait(&format!("{needle:?} in table {family} kube-proxy"), timeout, |kp| {
            kp.table(family).is_some_and(|r| r.contains(needle))
        });
    }

    /// Its ruleset once it has stayed the same for 1.5 s, longer than kube-proxy's 1 s
    /// minimum sync period: changes still on their way (an object applied just before)
    /// are in it.
    pub fn settled(&mut self, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        let mut last = self.ruleset().unwrap_or_default();
        let mut since = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(250));
            let now = self.ruleset().unwrap_or_default();
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= Duration::from_millis(1500) {
                return last;
            }
            assert!(Instant::now() < end, "the rules of kube-proxy of {} did not settle within {timeout:?}", self.node);
        }
    }

    /// Waits until its nftables table differs from `before` (an earlier [`KubeProxy::ruleset`]):
    /// it has synced a change. A sync is one nft transaction, so the table is never seen
    /// half-written.
    pub fn wait_changed(&mut self, before: &str, timeout: Duration) {
        self.wait("a change of table ip kube-proxy", timeout, |kp| kp.ruleset().is_some_and(|r| r != before));
    }

    /// Waits until `done`; panics naming `what` with its log (and whether it exited) otherwise.
    fn wait(&mut self, what: &str, timeout: Duration, done: impl Fn(&KubeProxy) -> bool) {
        let end = Instant::now() + timeout;
        loop {
            if done(self) {
                return;
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("kube-proxy of {} exited ({st}) before {what}:\n{}", self.node, self.log_text());
            }
            if Instant::now() >= end {
                let rules = self.ruleset().unwrap_or_else(|| "(no table ip kube-proxy)".into());
                panic!(
                    "kube-proxy of {} did not reach {what} within {timeout:?} (/healthz: {:?}):\n{rules}\n--- log:\n{}",
                    self.node,
                    self.healthz(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for KubeProxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A plain HTTP/1.0 GET of `path` from `addr` inside namespace `ns`: (status, body).
fn http_get(ns: &str, addr: &str, path: &str) -> Option<(u16, String)> {
    let (addr, path) = (addr.to_string(), path.to_string());
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        Some((status, body))
    })
}

fn http_status(ns: &str, addr: &str, path: &str) -> Option<u16> {
    http_get(ns, addr, path).map(|(s, _)| s)
}

/// Host-gw routing: on every worker, a route to each other worker's pod CIDR via that
/// worker's LAN address. `others` (e.g. a client) get the same routes when given.
pub fn route_pod_cidrs(workers: &[&Worker], others: &[&Host]) {
    for w in workers {
        let via = w.ip.to_string();
        let hosts = workers.iter().filter(|o| o.name != w.name).map(|o| &o.host).chain(others.iter().copied());
        for h in hosts {
            run("ip", &["-n", &h.ns, "route", "add", &w.pod_cidr, "via", &via]);
            if let Some((ip6, cidr6)) = &w.ip6 {
                run("ip", &["-n", &h.ns, "-6", "route", "add", cidr6, "via", &ip6.to_string()]);
            }
        }
    }
}

/// Writes Node `name` as the admin (there is no kubelet to register it): InternalIP `ip`,
/// Hostname `name`, `pod_cidr` (spec.podCIDR, spec.podCIDRs), condition Ready=True, `labels`.
///
/// What sticks: on create the API server keeps the status given (a kubelet registers its
/// Node the same way); on a later update it ignores status (that takes the status
/// subresource), so when the Node exists already its status is patched through the status
/// subresource as well. The TaintNodesByCondition admission plugin adds the
/// `node.kubernetes.io/not-ready` taint on create, which the node lifecycle controller would
/// take off a Ready node; there is no controller, so this takes it off.
pub fn node_object(api: &Api, name: &str, ips: &[IpAddr], pod_cidrs: &[&str], labels: &[(&str, &str)]) {
    let labels: serde_json::Map<String, serde_json::Value> =
        labels.iter().map(|(k, v)| ((*k).to_string(), serde_json::Value::from(*v))).collect();
    let mut addresses: Vec<serde_json::Value> =
        ips.iter().map(|ip| serde_json::json!({"type": "InternalIP", "address": ip.to_string()})).collect();
    addresses.push(serde_json::json!({"type": "Hostname", "address": name}));
    let status = serde_json::json!({
        "addresses": addresses,
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "lab node"}],
    });
    let mut node = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": status,
    });
    if let Some(c) = pod_cidrs.first() {
        node["spec"] = serde_json::json!({"podCIDR": c, "podCIDRs": pod_cidrs});
    }
    let exists = !api.kubectl(&["get", "node", name, "--ignore-not-found", "-o", "name"]).trim().is_empty();
    api.apply(&node.to_string()); // JSON is YAML
    if exists {
        let patch = serde_json::json!({ "status": status }).to_string();
        api.kubectl(&["patch", "node", name, "--subresource=status", "--type=merge", "-p", &patch]);
    }
    let taints = api.kubectl(&["get", "node", name, "-o", "jsonpath={.spec.taints[*].key}"]);
    if taints.contains("node.kubernetes.io/not-ready") {
        api.kubectl(&["taint", "node", name, "node.kubernetes.io/not-ready:NoSchedule-"]);
    }
    let got = api.kubectl(&[
        "get",
        "node",
        name,
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address} {.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    let want: Vec<String> = ips.iter().map(ToString::to_string).collect();
    assert_eq!(got.trim(), format!("{} True", want.join(" ")), "Node {name}: InternalIP and Ready did not stick");
}

/// Writes (creates or replaces) the EndpointSlice `SERVICE-lab` of Service `service` in
/// `default`, as the EndpointSlice controller would from the pods: `ports` are the
/// Service's port names with their target ports and protocols (the name must be the
/// Service port's, "" for an unnamed single port), `endpoints` (pod address, node name,
/// ready). A not-ready endpoint is written as not serving either (a pod failing its
/// readiness probe, not a terminating one).
pub fn endpoint_slice(api: &Api, service: &str, ports: &[(&str, u16, &str)], endpoints: &[(IpAddr, String, bool)]) {
    endpoint_slice_named(api, service, &format!("{service}-lab"), ports, endpoints);
}

/// [`endpoint_slice`] under the name `slice` (a Service with both families has a slice per
/// family); its addressType is the first endpoint's family.
pub fn endpoint_slice_named(
    api: &Api,
    service: &str,
    slice: &str,
    ports: &[(&str, u16, &str)],
    endpoints: &[(IpAddr, String, bool)],
) {
    let family = if endpoints.first().is_some_and(|e| e.0.is_ipv6()) { "IPv6" } else { "IPv4" };
    let ports: Vec<String> = ports
        .iter()
        .map(|(name, port, proto)| format!("{{name: '{name}', port: {port}, protocol: {proto}}}"))
        .collect();
    let mut y = format!(
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {slice}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {service}, endpointslice.kubernetes.io/managed-by: xlb-tests}}\naddressType: {family}\nports: [{}]\nendpoints:\n",
        ports.join(", ")
    );
    if endpoints.is_empty() {
        y = y.replace("endpoints:\n", "endpoints: []\n");
    }
    for (ip, node, ready) in endpoints {
        y.push_str(&format!(
            "  - {{addresses: ['{ip}'], nodeName: {node}, conditions: {{ready: {ready}, serving: {ready}, terminating: false}}}}\n"
        ));
    }
    api.apply(&y);
}
