//! Three xlb nodes in the netns lab, all on a REAL API server (scripts/k8s/apiserver.sh),
//! each running `xlb run --kubernetes` as the ServiceAccount deploy/rbac.yaml grants: VIPs
//! allocated from a pool, each announced by exactly one node (checked by ARP from the
//! client), traffic through them to DSR backends, a killed node's VIPs (and only those)
//! moving with gratuitous ARP within a second (heartbeats), an API server outage of 30 s
//! that traffic does not notice and during which a killed node still fails over, and xlb's
//! API write rate with 20 and with 200 VIPs (from the API server's audit log). Two nodes:
//! cuts between them settled by the witness Lease, a kill, and a cut with the API away.
//!
//! Figures are printed (`cargo test --test kube_lab -- --nocapture`); XLB_FAILOVER_KILLS sets
//! how many kills are timed (default 3). Needs root and the API server: under CI=true,
//! missing either is a failure.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: a panic is the report

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use support::{
    dsr_backend,
    kube::Api,
    neigh::{quantile, Asker},
    traffic::{in_netns, tcp_connections, Pinger},
    Host, Lab, Xlb,
};
use xlb::{io::packet_socket::PacketSocket, wire::EthernetAddress};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const NODES: [&str; 5] = ["node-a", "node-b", "node-c", "node-d", "node-e"];
const XLB_USER: &str = "system:serviceaccount:xlb-system:xlb";

/// The tests of this file take turns: each runs an API server and several xlb nodes, and
/// they time failovers on two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn vip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 100 + i)
}

/// Services whose backends are the lab's DSR hosts (on the LAN, holding the VIPs): the
/// endpoints path in DSR, chosen by annotation (the default path goes through worker nodes).
fn services_yaml(range: std::ops::Range<usize>, pool_label: &str) -> String {
    let mut y = String::new();
    for i in range {
        y.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default, labels: {{pool: {pool_label}}}, annotations: {{xlb.dev/backends: endpoints, xlb.dev/mode: dsr}}}}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: xlb.dev/xlb\n  ports: [{{port: 80, protocol: TCP}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-{i}-1\n  namespace: default\n  labels: {{kubernetes.io/service-name: svc-{i}}}\naddressType: IPv4\nports: [{{name: '', port: 80, protocol: TCP}}]\nendpoints:\n  - {{addresses: [10.77.0.21], nodeName: node-a, conditions: {{ready: true}}}}\n  - {{addresses: [10.77.0.22], nodeName: node-b, conditions: {{ready: true}}}}\n"
        ));
    }
    y
}

struct Node {
    name: &'static str,
    host: Host,
    xlb: Option<Xlb>,
}

/// Kills `node`'s xlb (-9) and times, from the client, until another MAC answers for one of
/// the VIPs it owned in `owners`: that VIP, how long it took, and whether a gratuitous ARP
/// came. `None` (and nothing killed) if it owned none.
fn kill_owner(
    ask: &Asker,
    owners: &BTreeMap<Ipv4Addr, EthernetAddress>,
    node: &mut Node,
) -> Option<(Ipv4Addr, Duration, bool)> {
    let mac = node.host.mac;
    let target = owners.iter().find(|(_, m)| **m == mac).map(|(v, _)| *v)?;
    let t0 = Instant::now();
    node.xlb.take().unwrap().signal("KILL");
    let (took, garp) = ask.takeover(target, mac, t0);
    Some((target, took, garp))
}

/// Each node's log, the lines `keep` keeps, for a failure message.
fn node_logs(nodes: &[Node], keep: impl Fn(&str) -> bool) -> String {
    let logs: Vec<String> = nodes
        .iter()
        .map(|n| {
            let log = n.xlb.as_ref().map(Xlb::log_text).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| keep(l)).collect();
            format!("{} ({}):\n{}", n.name, n.host.mac, lines.join("\n"))
        })
        .collect();
    logs.join("\n-----\n")
}

/// The lab's hosts: a client (10.77.0.1), the nodes `names` (10.77.0.11 on), and two DSR
/// backends (10.77.0.21 and .22) serving port 80 on `vips` (none: no servers).
fn hosts(lab: &mut Lab, names: &[&'static str], vips: &[Ipv4Addr]) -> (Host, Vec<Node>) {
    let client = lab.host("client", &["10.77.0.1/24"], 1);
    let nodes = names
        .iter()
        .enumerate()
        .map(|(i, n)| Node { name: n, host: lab.host(n, &[&format!("10.77.0.{}/24", 11 + i)], 1), xlb: None })
        .collect();
    let vip_strs: Vec<String> = vips.iter().map(ToString::to_string).collect();
    let vip_refs: Vec<&str> = vip_strs.iter().map(String::as_str).collect();
    for (i, name) in ["be1", "be2"].into_iter().enumerate() {
        let be = lab.host(name, &[&format!("10.77.0.{}/24", 21 + i)], 1);
        if !vips.is_empty() {
            dsr_backend(lab, &be, name, &vip_refs, 80);
        }
    }
    (client, nodes)
}

/// The cluster's objects: a Node per name (label ingress=true, InternalIP 10.77.0.11 on;
/// with `snat`, the SNAT address 10.77.0.91 on in its annotation), the pool `pool` of
/// `blocks` for Services labelled pool=`pool`, and a policy announcing from those Nodes.
fn cluster(api: &Api, names: &[&str], pool: &str, blocks: &str, snat: bool) {
    for (i, n) in names.iter().enumerate() {
        let annotations =
            if snat { format!(", annotations: {{xlb.dev/snat-addresses: 10.77.0.{}}}", 91 + i) } else { String::new() };
        api.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {n}, labels: {{ingress: 'true'}}{annotations}}}\nstatus:\n  addresses: [{{type: InternalIP, address: 10.77.0.{}}}]\n",
            11 + i
        ));
    }
    api.apply(&format!("apiVersion: xlb.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {{name: {pool}}}\nspec:\n  blocks: [{blocks}]\n  allowFirstLastIPs: 'Yes'\n  serviceSelector: {{matchLabels: {{pool: {pool}}}}}\n"));
    api.apply("apiVersion: xlb.dev/v1alpha1\nkind: L2AnnouncementPolicy\nmetadata: {name: ingress}\nspec:\n  loadBalancerIPs: true\n  interfaces: ['eth[0-9]+']\n  nodeSelector: {matchLabels: {ingress: 'true'}}\n");
}

/// Starts xlb on every node (`release`: the optimised build) once it can reach the API.
fn start_all(lab: &Lab, api: &Api, nodes: &mut [Node], release: bool) {
    for n in nodes {
        api.reach_from(&n.host.ns);
        n.xlb = Some(if release {
            start_release_node(lab, api, n.name, &n.host)
        } else {
            start_node(lab, api, n.name, &n.host)
        });
    }
}

fn start_node(lab: &Lab, api: &Api, name: &str, host: &Host) -> Xlb {
    Xlb::start(lab, host, &["--kubernetes", "--node-name", name, "--kubeconfig", &api.xlb])
}

/// A node running the optimised build (the scale test).
fn start_release_node(lab: &Lab, api: &Api, name: &str, host: &Host) -> Xlb {
    Xlb::start_release(lab, host, &["--kubernetes", "--node-name", name, "--kubeconfig", &api.xlb])
}

/// Writes by xlb per second over `window`, from the audit log (and what they were).
fn write_rate(api: &Api, window: Duration) -> f64 {
    let before = api.writes_by(XLB_USER);
    std::thread::sleep(window);
    let after = api.writes_by(XLB_USER);
    let diff: BTreeMap<&String, u64> =
        after.iter().map(|(k, n)| (k, n - before.get(k).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect();
    println!("xlb's writes in {window:?}: {diff:?}");
    diff.values().sum::<u64>() as f64 / window.as_secs_f64()
}

#[test]
fn three_nodes_share_twenty_vips_fail_over_and_survive_an_api_outage() {
    let _turn = one_at_a_time();
    let Some(mut lab) = Lab::new("three_nodes_share_twenty_vips") else { return };
    let Some(api) = Api::start() else { return };
    let vips: Vec<Ipv4Addr> = (0..20).map(vip).collect();
    let (client, mut nodes) = hosts(&mut lab, &NODES[..3], &vips);

    // The cluster: Nodes, a pool of exactly 20 addresses, a policy, 20 Services with slices.
    cluster(&api, &NODES[..3], "lab", "{start: 10.77.0.100, stop: 10.77.0.119}", true);
    api.apply(&services_yaml(0..20, "lab"));
    // One of them in SNAT mode: each node has its own SNAT address (its Node's annotation).
    api.kubectl(&["annotate", "--overwrite", "svc", "svc-19", "xlb.dev/mode=snat"]);
    start_all(&lab, &api, &mut nodes, false);
    let log0 = nodes[0].xlb.as_ref().unwrap().log.clone();
    api.wait_for("20 addresses allocated", 30, &log0, |api| {
        (0..20).all(|i| !api.ingress(&format!("svc-{i}")).is_empty())
    });

    // Exactly one node answers for each VIP, and the VIPs are spread over the nodes.
    let sock = PacketSocket::open(Some(&client.ns), "eth0").unwrap();
    let ask = Asker { sock: &sock, mac: client.mac, ip: CLIENT };
    let owners = ask.settled(&vips, Duration::from_secs(20));
    let macs: BTreeMap<EthernetAddress, &str> = nodes.iter().map(|n| (n.host.mac, n.name)).collect();
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for mac in owners.values() {
        let name = macs.get(mac).unwrap_or_else(|| panic!("{mac} is not a node's MAC"));
        *per_node.entry(name).or_default() += 1;
    }
    println!("VIPs per node: {per_node:?}");
    // `xlb status` on a node says who the members are and who announces what.
    let (ok, status, err) = nodes[0].xlb.as_ref().unwrap().cli(&["status"]);
    assert!(ok, "xlb status: {err}");
    assert!(status.contains("live members: node-a, node-b, node-c"), "{status}");
    let owner_b = owners.iter().find(|(_, m)| **m == nodes[1].host.mac).map(|(v, _)| v.to_string()).unwrap();
    assert!(status.lines().any(|l| l.starts_with(&owner_b) && l.trim_end().ends_with("node-b")), "{status}");
    assert_eq!(per_node.len(), 3, "every node announces some of the 20 VIPs: {per_node:?}");

    // Traffic reaches the backends through every VIP.
    let targets: Vec<SocketAddr> = vips.iter().map(|v| SocketAddr::from((*v, 80))).collect();
    let out = in_netns(&client.ns, move || targets.iter().map(|t| tcp_connections(*t, 4)).collect::<Vec<_>>());
    let snat_addrs: BTreeSet<String> = (91..94).map(|i| format!("10.77.0.{i}")).collect();
    for (v, o) in vips.iter().zip(&out) {
        assert!(o.failures.is_empty(), "{v}: {:?}", o.failures);
        assert!(o.by_backend.keys().all(|b| b == "be1" || b == "be2"), "{v}: {:?}", o.by_backend);
    }
    // svc-19 is SNAT: the backends saw one node's SNAT address; the others the client.
    let snat_vip = api.ingress("svc-19").parse::<Ipv4Addr>().unwrap();
    for (v, o) in vips.iter().zip(&out) {
        if *v == snat_vip {
            assert!(o.peers.len() == 1 && o.peers.is_subset(&snat_addrs), "{v} (snat) seen from {:?}", o.peers);
        } else {
            assert_eq!(o.peers, BTreeSet::from([CLIENT.to_string()]), "{v} (dsr)");
        }
    }
    // The Service says which node announces it.
    let events = api.events();
    assert!(
        events.lines().any(|l| l.starts_with("IPAnnounced svc-") && l.contains("announced by node node-")),
        "{events}"
    );

    // A host that is no xlb node claims a VIP (gratuitous ARP from the client): the owner
    // says so in an Event on the Service (once per claimant per 30 s).
    let claimed = vips[0];
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        // Claimed again every round, as a real claimant would (one frame can be lost).
        sock.send(&support::frames::arp_request(client.mac, claimed, claimed)).unwrap();
        let events = api.events();
        let want = format!("{claimed} is also claimed by MAC {}", client.mac);
        if let Some(l) = events.lines().find(|l| l.starts_with("AddressConflict") && l.contains(&want)) {
            println!("conflict Event: {l}");
            // Nodes know each other by their heartbeats: none took another node for a
            // stranger while they started (a node announces only once the others list it).
            for n in &nodes {
                let stranger = format!("claimed by MAC {}", n.host.mac);
                if events.contains(&stranger) {
                    panic!("{} was taken for an outside host:\n{events}\n{}", n.name, node_logs(&nodes, |_| true));
                }
            }
            break;
        }
        if Instant::now() >= end {
            let logs = node_logs(&nodes, |l| l.contains("claim") || l.contains("Event"));
            panic!("no AddressConflict Event for {want} within 10 s:\n{events}\n{logs}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    // API write rate with 20 VIPs, idle.
    let rate20 = write_rate(&api, Duration::from_secs(20));

    // Kills: only the killed node's VIPs move, the new owner sends gratuitous ARP; the node
    // comes back and takes its VIPs back.
    let kills: usize = std::env::var("XLB_FAILOVER_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let mut times = Vec::new();
    let mut owners = owners;
    for k in 0..kills {
        let victim = k % 3;
        let victim_mac = nodes[victim].host.mac;
        let Some((target, took, garp)) = kill_owner(&ask, &owners, &mut nodes[victim]) else { continue };
        assert!(garp, "no gratuitous ARP for {target} from its new owner");
        times.push(took);
        let after = ask.settled(&vips, Duration::from_secs(20));
        for (v, m) in &owners {
            if *m == victim_mac {
                assert_ne!(after[v], victim_mac, "{v} still answered by the killed node");
            } else {
                assert_eq!(after[v], *m, "{v} moved though its owner lives");
            }
        }
        println!("kill {}: {} -> {target} answered by another node after {took:?}", k + 1, nodes[victim].name);
        let n = &mut nodes[victim];
        n.xlb = Some(start_node(&lab, &api, n.name, &n.host));
        // Back: it takes exactly its VIPs back (rendezvous), once the others see its Lease.
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let now = ask.settled(&vips, Duration::from_secs(20));
            if now == owners {
                break;
            }
            assert!(Instant::now() < end, "ownership after the node came back differs: {now:?} vs {owners:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
        owners = ask.settled(&vips, Duration::from_secs(5));
    }
    if !times.is_empty() {
        let max = *times.iter().max().unwrap();
        println!(
            "failover seen by the client over {} kills: median {:?}, max {max:?}",
            times.len(),
            quantile(&times, 0.5)
        );
        assert!(max < Duration::from_secs(1), "with heartbeats a failover must take well under a second: {times:?}");
    }

    // The API server away for 30 s: traffic keeps flowing on the last known state, and
    // nobody's VIPs move.
    api.stop_apiserver();
    let outage = Instant::now();
    while outage.elapsed() < Duration::from_secs(30) {
        let targets: Vec<SocketAddr> = vips.iter().map(|v| SocketAddr::from((*v, 80))).collect();
        let out = in_netns(&client.ns, move || targets.iter().map(|t| tcp_connections(*t, 1)).collect::<Vec<_>>());
        for (v, o) in vips.iter().zip(&out) {
            assert!(o.failures.is_empty(), "{v} during the API outage ({:?} in): {:?}", outage.elapsed(), o.failures);
        }
        std::thread::sleep(Duration::from_secs(4));
    }
    assert_eq!(ask.settled(&vips, Duration::from_secs(5)), owners, "VIPs moved during the outage");
    // An owner killed while the API is away still fails over: heartbeats need no API.
    let (target, took, _) = kill_owner(&ask, &owners, &mut nodes[2]).expect("node-c owns VIPs");
    println!("during the API outage: node-c killed, {target} answered by another node after {took:?}");
    assert!(took < Duration::from_secs(1), "failover during the API outage took {took:?}");
    api.start_apiserver();
    nodes[2].xlb = Some(start_node(&lab, &api, nodes[2].name, &nodes[2].host));
    // Back: xlb catches up without a restart. svc-0 loses be2: only be1 gets new flows.
    api.apply("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: svc-0-1\n  namespace: default\n  labels: {kubernetes.io/service-name: svc-0}\naddressType: IPv4\nports: [{name: '', port: 80, protocol: TCP}]\nendpoints:\n  - {addresses: [10.77.0.21], conditions: {ready: true}}\n");
    let t = SocketAddr::from((vip(0), 80));
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let o = in_netns(&client.ns, move || tcp_connections(t, 12));
        if o.failures.is_empty() && o.by_backend.keys().all(|b| b == "be1") {
            break;
        }
        if Instant::now() >= end {
            let logs: Vec<String> = nodes.iter().map(|n| n.xlb.as_ref().unwrap().log_text()).collect();
            panic!(
                "xlb did not catch up after the outage: {:?} {:?}\n{}",
                o.by_backend,
                o.failures,
                logs.join("\n-----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for n in &mut nodes {
        assert!(n.xlb.as_mut().unwrap().alive(), "{} restarted or died", n.name);
    }
    assert_eq!(ask.settled(&vips, Duration::from_secs(15)), owners, "VIPs moved after the outage");

    // 200 VIPs: 180 more Services from a second pool; the idle write rate stays flat.
    api.apply("apiVersion: xlb.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {name: more}\nspec:\n  blocks: [{cidr: 10.78.0.0/24}]\n  serviceSelector: {matchLabels: {pool: more}}\n");
    api.apply(&services_yaml(20..200, "more"));
    let end = Instant::now() + Duration::from_secs(120);
    while api
        .kubectl(&["get", "svc", "-n", "default", "-o", "jsonpath={.items[*].status.loadBalancer.ingress[*].ip}"])
        .split_whitespace()
        .count()
        < 200
    {
        if Instant::now() >= end {
            let logs: Vec<String> = nodes.iter().map(|n| n.xlb.as_ref().unwrap().log_text()).collect();
            panic!("200 addresses not allocated within 120 s:\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    // Let the burst of the new Services' Events settle: the rate measured is the idle one.
    std::thread::sleep(Duration::from_secs(10));
    let rate200 = write_rate(&api, Duration::from_secs(20));
    println!("xlb API writes per second (3 nodes, idle): {rate20:.2} with 20 VIPs, {rate200:.2} with 200 VIPs");
    assert!(rate20 > 0.0, "no Lease renewals seen in the audit log");
    assert!(rate200 <= rate20 * 1.25 + 0.2, "writes grew with the VIPs: {rate20:.2}/s -> {rate200:.2}/s");
    for n in &mut nodes {
        n.xlb.as_mut().unwrap().stop();
    }
}

/// A DaemonSet upgrade, node after node, as the chart runs it (maxSurge 1): the new pod's
/// xlb starts beside the old one with `--takeover`, the old one hands over, and the pod's
/// SIGTERM then ends it. Every VIP stays on its node (the peer holds it, and never takes it
/// over), and every long-lived connection, DSR and SNAT, is kept.
#[test]
fn a_rolling_upgrade_keeps_every_vip_on_its_node_and_every_connection() {
    let _turn = one_at_a_time();
    let Some(mut lab) = Lab::new("rolling_upgrade") else { return };
    let Some(api) = Api::start() else { return };
    let vips: Vec<Ipv4Addr> = (0..4).map(vip).collect();
    let (client, mut nodes) = hosts(&mut lab, &NODES[..2], &vips);
    cluster(&api, &NODES[..2], "lab", "{start: 10.77.0.100, stop: 10.77.0.103}", true);
    api.apply(&services_yaml(0..4, "lab"));
    for svc in ["svc-2", "svc-3"] {
        api.kubectl(&["annotate", "--overwrite", "svc", svc, "xlb.dev/mode=snat"]);
    }
    start_all(&lab, &api, &mut nodes, true);
    let log0 = nodes[0].xlb.as_ref().unwrap().log.clone();
    api.wait_for("4 addresses allocated", 30, &log0, |api| {
        (0..4).all(|i| !api.ingress(&format!("svc-{i}")).is_empty())
    });
    let sock = PacketSocket::open(Some(&client.ns), "eth0").unwrap();
    let ask = Asker { sock: &sock, mac: client.mac, ip: CLIENT };
    let owners = ask.settled(&vips, Duration::from_secs(20));
    for n in &nodes {
        let owned: Vec<&Ipv4Addr> = owners.iter().filter(|(_, m)| **m == n.host.mac).map(|(v, _)| v).collect();
        println!("{} announces {owned:?}", n.name);
    }
    let snat: BTreeSet<Ipv4Addr> = ["svc-2", "svc-3"].iter().map(|s| api.ingress(s).parse().unwrap()).collect();
    let addrs: Vec<SocketAddr> = vips.iter().map(|v| SocketAddr::from((*v, 80))).collect();
    // Every VIP answers before the connections are held.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let a = addrs.clone();
        let out = in_netns(&client.ns, move || a.iter().map(|t| tcp_connections(*t, 1)).collect::<Vec<_>>());
        if out.iter().all(|o| o.failures.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < end,
            "the VIPs do not all answer: {:?}",
            out.iter().map(|o| &o.failures).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let pinger = Pinger::start(&client.ns, &addrs, 3, Duration::from_millis(5), Duration::from_secs(15));
    std::thread::sleep(Duration::from_secs(1));

    let takeovers = |x: &Xlb| x.log_text().matches("taking the VIP over").count();
    let mut old_logs = Vec::new();
    for i in 0..nodes.len() {
        pinger.next_phase();
        let peer = 1 - i;
        let taken_before = takeovers(nodes[peer].xlb.as_ref().unwrap());
        let t0 = Instant::now();
        let (name, host) = (nodes[i].name, &nodes[i].host);
        let new = Xlb::start_release(
            &lab,
            host,
            &["--kubernetes", "--node-name", name, "--kubeconfig", &api.xlb, "--takeover"],
        );
        let running = t0.elapsed();
        let mut old = nodes[i].xlb.replace(new).unwrap();
        old.wait_log("waiting for SIGTERM", Duration::from_secs(10));
        // The old pod is deleted once the new one is ready: SIGTERM ends it at once.
        let t1 = Instant::now();
        assert_eq!(old.signal("TERM"), Some(0), "{}", old.log_text());
        let ended = t1.elapsed();
        let (old_log, new_log) = (old.log_text(), nodes[i].xlb.as_ref().unwrap().log_text());
        old_logs.push(format!("{name}, before its upgrade:\n{old_log}"));
        let line = |log: &str, needle: &str| log.lines().find(|l| l.contains(needle)).unwrap_or("").to_string();
        println!(
            "{name}: new xlb running after {running:?}; old one ended {ended:?} after SIGTERM\n  old: {}\n  new: {}",
            line(&old_log, "handed over:"),
            line(&new_log, "the previous xlb handed over")
        );
        assert!(old_log.contains("the membership Lease stays"), "{name}: {old_log}");
        assert!(!old_log.contains("membership Lease deleted"), "{name} left the members: {old_log}");
        // The peer was told, held the node's VIPs, and took none of them.
        let peer_name = nodes[peer].name;
        let peer_xlb = nodes[peer].xlb.as_mut().unwrap();
        peer_xlb.wait_log(
            &format!("a peer hands over to a new xlb on its node: it keeps its VIPs node=\"{name}\""),
            Duration::from_secs(5),
        );
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(
            takeovers(peer_xlb),
            taken_before,
            "{} took VIPs over during {name}'s upgrade:\n{}",
            peer_name,
            peer_xlb.log_text()
        );
        assert_eq!(ask.settled(&vips, Duration::from_secs(5)), owners, "a VIP moved in {name}'s upgrade");
    }
    let (rounds, worst) = pinger.finish();
    println!(
        "rolling upgrade under {} long-lived connections ({} of them SNAT): rounds {rounds:?}; worst round before: {:?}, \
         across {}'s upgrade: {:?}, across {}'s: {:?}",
        addrs.len() * 3,
        snat.len() * 3,
        worst[0],
        nodes[0].name,
        worst[1],
        nodes[1].name,
        worst[2]
    );
    let rounds = rounds.unwrap_or_else(|e| {
        panic!(
            "a connection broke in the upgrade: {e}\n{}\n-----\n{}",
            old_logs.join("\n-----\n"),
            node_logs(&nodes, |_| true)
        )
    });
    assert!(rounds > 50, "{rounds} rounds of pings");
    for (n, w) in nodes.iter().zip(&worst[1..]) {
        assert!(*w < Duration::from_secs(5), "{}'s upgrade stalled the connections for {w:?}", n.name);
    }
    for n in &mut nodes {
        n.xlb.as_mut().unwrap().stop();
    }
}

/// Drops heartbeats to and from (`both`) or only from `node` on the lab's bridge.
/// The MACs that answer ARP for `vip`, asked by `asker`.
fn arp_answer(asker: &Asker, vip: Ipv4Addr) -> Vec<EthernetAddress> {
    asker.census(&[vip]).remove(&vip).unwrap_or_default().into_iter().collect()
}

/// `../shared/seeds/002` in the lab, its objects applied unchanged (Cilium's definitions
/// from `xlb crds --cilium`): two nodes, each with `eno1` on the internal segment
/// (192.168.3.0/24) and `eno2` on the public one (192.168.4.0/24), each running
/// `xlb run --kubernetes --interface eno1,eno2`; the document's two pools, two policies (eno2
/// for control-plane nodes only) and Services. Each VIP is answered on its own interface's
/// segment only, by one node, and the public one only by the control-plane node: what
/// Cilium's l2announcer gives (a policy's `interfaces` against the node's links, its
/// `nodeSelector` against the Node).
#[test]
fn seed_002_each_vip_announced_on_its_interface_by_its_nodes() {
    let _turn = one_at_a_time();
    let Some(mut lab) = Lab::new("seed_002_each_vip_announced_on_its_interface_by_its_nodes") else { return };
    let Some(api) = Api::start() else { return };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    api.apply_crds(&root.join("deploy/crds-cilium.yaml"));
    lab.segment("br1");
    let client = lab.host("client", &["192.168.3.1/24"], 1);
    let client2 = lab.host_on("br1", "client2", &["192.168.4.1/24"]);
    let mut nodes = Vec::new();
    for (i, name) in ["node-a", "node-b"].into_iter().enumerate() {
        let (internal, public) = (format!("192.168.3.{}/24", 11 + i), format!("192.168.4.{}/24", 11 + i));
        let host = lab.host_with(name, &[("eno1", "br0", &[&internal]), ("eno2", "br1", &[&public])]);
        let labels = if i == 0 { "{node.kubernetes.io/control-plane: ''}" } else { "{}" };
        api.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {labels}}}\nstatus:\n  addresses: [{{type: InternalIP, address: 192.168.3.{}}}]\n  conditions: [{{type: Ready, status: 'True'}}]\n",
            11 + i
        ));
        nodes.push((name, host));
    }
    let seeds = root.join("tests/fixtures/seeds");
    api.apply_file(&seeds.join("002-multi-interface.yaml"));
    api.apply_file(&seeds.join("002-services.yaml"));
    let mut xlbs = Vec::new();
    for (name, host) in &nodes {
        api.reach_from(&host.ns);
        let args = ["-i", "eno1,eno2", "--kubernetes", "--unclassed", "--node-name", name, "--kubeconfig", &api.xlb];
        xlbs.push(Xlb::start_args(&lab, host, &args));
    }
    let (internal, public) = (Ipv4Addr::new(192, 168, 3, 150), Ipv4Addr::new(192, 168, 4, 150));
    let log = xlbs[0].log.clone();
    api.wait_for("the seed's Services' addresses", 30, &log, |api| {
        api.ingress("my-service") == internal.to_string() && api.ingress("api-external") == public.to_string()
    });
    let eno1: Vec<EthernetAddress> = nodes.iter().map(|(_, h)| support::link_mac(&h.ns, "eno1")).collect();
    let a_eno2 = support::link_mac(&nodes[0].1.ns, "eno2");
    let sock1 = PacketSocket::open(Some(&client.ns), "eth0").unwrap();
    let sock2 = PacketSocket::open(Some(&client2.ns), "eth0").unwrap();
    let ask1 = Asker { sock: &sock1, mac: client.mac, ip: Ipv4Addr::new(192, 168, 3, 1) };
    let ask2 = Asker { sock: &sock2, mac: client2.mac, ip: Ipv4Addr::new(192, 168, 4, 1) };
    // Announced once the nodes have planned: ask until both answer, then look closely.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (got1, got2) = (arp_answer(&ask1, internal), arp_answer(&ask2, public));
        if got1.len() == 1 && got2.len() == 1 {
            assert!(eno1.contains(&got1[0]), "{internal} answered by {}, not a node's eno1", got1[0]);
            assert_eq!(got2[0], a_eno2, "{public}: only node-a (control-plane) may announce it, on eno2");
            break;
        }
        assert!(
            Instant::now() < end,
            "internal answered by {got1:?}, public by {got2:?}:\n{}",
            xlbs.iter().map(Xlb::log_text).collect::<Vec<_>>().join("\n-----\n")
        );
    }
    for _ in 0..3 {
        assert_eq!(arp_answer(&ask1, public), [], "the public VIP answered on the internal segment");
        assert_eq!(arp_answer(&ask2, internal), [], "the internal VIP answered on the public segment");
    }
    for x in &mut xlbs {
        x.stop();
    }
}

fn cut_heartbeats(lab: &Lab, node: &str, both: bool) {
    let port = format!("p-{node}");
    lab.switch_nft(&["add", "table", "bridge", "cut"]);
    lab.switch_nft(&["add", "chain", "bridge", "cut", "fw", "{ type filter hook forward priority 0; }"]);
    let dirs: &[&str] = if both { &["iifname", "oifname"] } else { &["iifname"] };
    for dir in dirs {
        lab.switch_nft(&["add", "rule", "bridge", "cut", "fw", dir, &port, "ether", "type", "0x88b5", "drop"]);
    }
}

/// Two nodes have no majority of their own: a cut between them is settled by the witness
/// Lease, which one node at most holds. The holder takes every VIP, the other fences (the
/// client never sees two MACs for longer than one announcement round); healing gives the
/// VIPs back once; a killed node's VIPs move within a second; with the API server away, a
/// cut fences both nodes rather than letting both answer.
#[test]
fn two_nodes_settle_cuts_through_the_witness_lease() {
    let _turn = one_at_a_time();
    let Some(mut lab) = Lab::new("two_nodes_witness") else { return };
    let Some(api) = Api::start() else { return };
    let vips: Vec<Ipv4Addr> = (0..10).map(vip).collect();
    let (client, mut nodes) = hosts(&mut lab, &NODES[..2], &vips);
    cluster(&api, &NODES[..2], "lab", "{start: 10.77.0.100, stop: 10.77.0.109}", false);
    api.apply(&services_yaml(0..10, "lab"));
    start_all(&lab, &api, &mut nodes, false);
    let log0 = nodes[0].xlb.as_ref().unwrap().log.clone();
    api.wait_for("10 addresses allocated", 30, &log0, |api| {
        (0..10).all(|i| !api.ingress(&format!("svc-{i}")).is_empty())
    });
    let sock = PacketSocket::open(Some(&client.ns), "eth0").unwrap();
    let ask = Asker { sock: &sock, mac: client.mac, ip: CLIENT };
    let owners = ask.settled(&vips, Duration::from_secs(20));
    let (a_mac, b_mac) = (nodes[0].host.mac, nodes[1].host.mac);
    let of = |mac: EthernetAddress| owners.iter().find(|(_, m)| **m == mac).map(|(v, _)| *v);
    let (Some(va), Some(vb)) = (of(a_mac), of(b_mac)) else {
        panic!("each of the two nodes should announce some of the 10 VIPs: {owners:?}")
    };
    let holder = || {
        api.kubectl(&[
            "get",
            "lease",
            "-n",
            "xlb-system",
            "xlb-witness",
            "--ignore-not-found",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ])
        .trim()
        .to_string()
    };
    let mac_of = |name: &str| if name == nodes[0].name { a_mac } else { b_mac };
    let back_to_first = |what: &str| {
        let end = Instant::now() + Duration::from_secs(15);
        while ask.settled(&vips, Duration::from_secs(10)) != owners {
            assert!(Instant::now() < end, "ownership did not return to its first state after {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
        // Once, and stable: each node's VIP answered by its first owner only for 3 s.
        let seen = ask.answers(&[va, vb], Duration::from_secs(3));
        assert_eq!(seen[&va].keys().copied().collect::<Vec<_>>(), vec![a_mac], "{va} flapped after {what}");
        assert_eq!(seen[&vb].keys().copied().collect::<Vec<_>>(), vec![b_mac], "{vb} flapped after {what}");
        let end = Instant::now() + Duration::from_secs(5);
        while !holder().is_empty() {
            assert!(Instant::now() < end, "the witness was not released after {what}: held by {}", holder());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // A node that starts before its peer holds the witness until it hears the peer; a
    // healthy pair then leaves it free (and writes nothing).
    let end = Instant::now() + Duration::from_secs(5);
    while !holder().is_empty() {
        assert!(Instant::now() < end, "a healthy pair keeps the witness: held by {}", holder());
        std::thread::sleep(Duration::from_millis(100));
    }

    for (what, both) in [("two-way cut", true), ("one-way cut", false)] {
        cut_heartbeats(&lab, nodes[0].name, both);
        let seen = ask.answers(&[va, vb], Duration::from_secs(2));
        let winner = holder();
        assert!(winner == nodes[0].name || winner == nodes[1].name, "{what}: witness held by {winner:?}");
        let (win, lose) =
            (mac_of(&winner), mac_of(if winner == nodes[0].name { nodes[1].name } else { nodes[0].name }));
        let after = ask.settled(&vips, Duration::from_secs(5));
        assert!(
            after.values().all(|m| *m == win),
            "{what}: the witness holder {winner} should answer for all: {after:?}"
        );
        // The VIP that moved: both MACs at once for at most one announcement round.
        let moved = if win == a_mac { vb } else { va };
        let took = seen[&moved].get(&win).map(|x| x.0);
        let both_for = support::neigh::overlap(&seen[&moved], lose);
        println!(
            "{what}: witness taken by {winner}; {moved} answered by it after {took:?}; both answered for {both_for:?}"
        );
        assert!(
            took.is_some_and(|t| t < Duration::from_secs(1)),
            "{what}: {moved} not taken within a second: {seen:?}"
        );
        assert!(both_for <= Duration::from_millis(250), "{what}: two nodes answered {moved} for {both_for:?}");
        lab.switch_nft(&["delete", "table", "bridge", "cut"]);
        back_to_first(what);
    }

    // A killed node: the survivor takes the free witness and the VIPs within a second.
    let t0 = Instant::now();
    nodes[0].xlb.take().unwrap().signal("KILL");
    let (took, garp) = ask.takeover(va, a_mac, t0);
    println!("two nodes, node-a killed: {va} answered by node-b after {took:?}");
    assert!(garp && took < Duration::from_secs(1), "two-node failover took {took:?} (gratuitous ARP: {garp})");
    assert_eq!(holder(), nodes[1].name);
    nodes[0].xlb = Some(start_node(&lab, &api, nodes[0].name, &nodes[0].host));
    back_to_first("node-a's restart");

    // The API server away, and a cut: nobody can hold the witness, so both fence (no answer
    // is safer than two answers; heartbeats keep a pair that hears itself going).
    api.stop_apiserver();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ask.settled(&vips, Duration::from_secs(5)), owners, "VIPs moved when the API went away");
    cut_heartbeats(&lab, nodes[0].name, true);
    std::thread::sleep(Duration::from_secs(1));
    let census = ask.census(&vips);
    println!("API away and a cut: answers {census:?}");
    assert!(census.values().all(BTreeSet::is_empty), "with no witness, a cut pair must not answer: {census:?}");
    lab.switch_nft(&["delete", "table", "bridge", "cut"]);
    assert_eq!(ask.settled(&vips, Duration::from_secs(5)), owners, "the pair did not come back after the cut healed");
    api.start_apiserver();
    for n in &mut nodes {
        n.xlb.as_mut().unwrap().stop();
    }
}

/// Gratuitous ARP (sender address = target address) in a pcap file, by VIP: when each was
/// seen (seconds from the capture's first frame).
fn garps_in(pcap: &std::path::Path) -> BTreeMap<Ipv4Addr, Vec<f64>> {
    let data = std::fs::read(pcap).unwrap_or_else(|e| panic!("{}: {e}", pcap.display()));
    assert!(data.len() >= 24 && data[..4] == [0xd4, 0xc3, 0xb2, 0xa1], "not a little-endian pcap file");
    let u32le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let mut out: BTreeMap<Ipv4Addr, Vec<f64>> = BTreeMap::new();
    let (mut at, mut first) = (24, None);
    while at + 16 <= data.len() {
        let t = f64::from(u32le(&data[at..])) + f64::from(u32le(&data[at + 4..])) / 1e6;
        let len = u32le(&data[at + 8..]) as usize;
        let frame = &data[(at + 16).min(data.len())..(at + 16 + len).min(data.len())];
        at += 16 + len;
        let t0 = *first.get_or_insert(t);
        // Ethernet + ARP: EtherType 0x0806, sender IP at 28, target IP at 38.
        if frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[28..32] == frame[38..42] {
            let ip = Ipv4Addr::new(frame[28], frame[29], frame[30], frame[31]);
            out.entry(ip).or_default().push(t - t0);
        }
    }
    out
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<u64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // Fields 14 and 15 of stat (utime, stime), in clock ticks of 10 ms.
    Duration::from_millis((f.get(11).unwrap_or(&0) + f.get(12).unwrap_or(&0)) * 10)
}

/// 1,000 VIPs on five nodes (the release build: see `release_xlb`): every VIP answered by
/// exactly one node, xlb's API write rate the same with 10 and with 1,000 VIPs, and over a
/// soak (XLB_SOAK_SECONDS, default 65: two refresh rounds) a refresh gratuitous ARP for every
/// VIP every 30 s in a tcpdump capture, xlb's CPU meanwhile; then a kill moves only the
/// victim's VIPs within a second.
#[test]
fn five_nodes_hold_a_thousand_vips_with_a_flat_api_write_rate() {
    const N: usize = 1000;
    let _turn = one_at_a_time();
    let Some(mut lab) = Lab::new("five_nodes_thousand_vips") else { return };
    let Some(api) = Api::start() else { return };
    let (client, mut nodes) = hosts(&mut lab, &NODES, &[]);
    cluster(&api, &NODES, "soak", "{cidr: 10.78.0.0/22}", false);
    let create = |range: std::ops::Range<usize>| {
        let f = lab.dir.join(format!("services-{}.yaml", range.start));
        std::fs::write(&f, services_yaml(range, "soak")).unwrap();
        api.kubectl(&["create", "-f", &f.to_string_lossy()]);
    };
    let allocated = || {
        let ips = api.kubectl(&[
            "get",
            "svc",
            "-n",
            "default",
            "-o",
            "jsonpath={.items[*].status.loadBalancer.ingress[*].ip}",
        ]);
        ips.split_whitespace().filter_map(|s| s.parse::<Ipv4Addr>().ok()).collect::<Vec<_>>()
    };
    let sock = PacketSocket::open(Some(&client.ns), "eth0").unwrap();
    sock.set_recv_buffer(16 << 20).unwrap();
    let ask = Asker { sock: &sock, mac: client.mac, ip: CLIENT };
    // Census in slices, so that the answers of a slice fit the socket's buffer.
    let settled = |vips: &[Ipv4Addr]| -> BTreeMap<Ipv4Addr, EthernetAddress> {
        vips.chunks(200).flat_map(|c| ask.settled(c, Duration::from_secs(60))).collect()
    };

    create(0..10);
    start_all(&lab, &api, &mut nodes, true);
    let log0 = nodes[0].xlb.as_ref().unwrap().log.clone();
    api.wait_for("10 addresses allocated", 30, &log0, |_| allocated().len() == 10);
    settled(&allocated());
    std::thread::sleep(Duration::from_secs(5));
    let rate10 = write_rate(&api, Duration::from_secs(20));

    let t = Instant::now();
    create(10..N);
    let mut last_print = Instant::now();
    loop {
        let n = allocated().len();
        if n == N {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            println!("allocated {n} of {N} after {:?}", t.elapsed());
            last_print = Instant::now();
        }
        if t.elapsed() > Duration::from_secs(300) {
            let logs: Vec<String> = nodes.iter().map(|n| n.xlb.as_ref().unwrap().log_text()).collect();
            panic!("only {n} of {N} addresses allocated within 300 s:\n{}", logs.join("\n-----\n"));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let vips = allocated();
    let owners = settled(&vips);
    println!("{N} Services allocated and each VIP answered by one node after {:?}", t.elapsed());
    let macs: BTreeMap<EthernetAddress, &str> = nodes.iter().map(|n| (n.host.mac, n.name)).collect();
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for m in owners.values() {
        *per_node.entry(macs.get(m).unwrap_or_else(|| panic!("{m} is not a node's MAC"))).or_default() += 1;
    }
    println!("VIPs per node: {per_node:?}");
    if per_node.len() != NODES.len() {
        let logs: Vec<String> = nodes
            .iter()
            .map(|n| {
                let x = n.xlb.as_ref().unwrap();
                let (_, status, _) = x.cli(&["status"]);
                let failover: Vec<&str> =
                    status.lines().filter(|l| l.starts_with("failover") || l.starts_with("kubernetes")).collect();
                let log = x.log_text();
                let lines: Vec<&str> =
                    log.lines().filter(|l| !l.contains("announces the VIP") && !l.contains("taking the VIP")).collect();
                format!("{}: {failover:?}\n{}", n.name, lines[lines.len().saturating_sub(40)..].join("\n"))
            })
            .collect();
        panic!("every node should announce some VIPs: {per_node:?}\n{}", logs.join("\n-----\n"));
    }

    // The soak: a capture of ARP on the client's side, API writes and xlb's CPU meanwhile.
    std::thread::sleep(Duration::from_secs(10));
    let soak: u64 = std::env::var("XLB_SOAK_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(65);
    let pcap = lab.dir.join("soak.pcap");
    let mut dump = std::process::Command::new("ip")
        .args(["netns", "exec", &client.ns, "tcpdump", "-i", "eth0", "-B", "16384", "-U", "-n", "-w"])
        .arg(&pcap)
        .arg("arp")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let cpu0: Vec<Duration> = nodes.iter().map(|n| cpu_time(n.xlb.as_ref().unwrap().pid())).collect();
    let rate1000 = write_rate(&api, Duration::from_secs(soak));
    let cpu: Vec<String> = nodes
        .iter()
        .zip(&cpu0)
        .map(|(n, c0)| {
            let used = cpu_time(n.xlb.as_ref().unwrap().pid()).saturating_sub(*c0);
            format!("{} {:.2}%", n.name, 100.0 * used.as_secs_f64() / soak as f64)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    run_kill(dump.id());
    let _ = dump.wait();
    println!("xlb's CPU over the {soak} s soak (share of one core): {}", cpu.join(", "));
    println!("xlb API writes per second (5 nodes, idle): {rate10:.2} with 10 VIPs, {rate1000:.2} with {N} VIPs");
    assert!(rate10 > 0.0, "no Lease renewals seen in the audit log");
    assert!(rate1000 <= rate10 * 1.25 + 0.2, "writes grew with the VIPs: {rate10:.2}/s -> {rate1000:.2}/s");

    // Refreshes: for every VIP, rounds of gratuitous ARP (frames within a second of each other
    // are one round) 30 s apart.
    let garps = garps_in(&pcap);
    let mut gaps: Vec<Duration> = Vec::new();
    let mut too_few = Vec::new();
    for v in &vips {
        let times = garps.get(v).cloned().unwrap_or_default();
        let mut rounds: Vec<f64> = Vec::new();
        for t in times {
            if rounds.last().is_none_or(|l| t - l > 1.0) {
                rounds.push(t);
            }
        }
        if (rounds.len() as u64) < soak / 30 {
            too_few.push((*v, rounds.clone()));
        }
        gaps.extend(rounds.windows(2).map(|w| Duration::from_secs_f64(w[1] - w[0])));
    }
    println!(
        "refresh rounds seen in the capture: {} gaps between rounds of one VIP, min {:?}, median {:?}, max {:?}",
        gaps.len(),
        quantile(&gaps, 0.0),
        quantile(&gaps, 0.5),
        quantile(&gaps, 1.0)
    );
    assert!(
        too_few.is_empty(),
        "{} VIPs had fewer than {} refreshes in {soak} s: {:?}",
        too_few.len(),
        soak / 30,
        &too_few[..too_few.len().min(5)]
    );
    assert!(
        quantile(&gaps, 0.0) >= Duration::from_secs(29) && quantile(&gaps, 1.0) <= Duration::from_secs(31),
        "refreshes should come every 30 s"
    );

    // A kill with 1,000 VIPs: the victim's VIPs, and only those, move within a second.
    let victim_mac = nodes[0].host.mac;
    let (target, took, garp) = kill_owner(&ask, &owners, &mut nodes[0]).expect("node-a owns VIPs");
    println!("{N} VIPs: node-a killed, {target} answered by another node after {took:?}");
    assert!(garp && took < Duration::from_secs(1), "failover with {N} VIPs took {took:?} (gratuitous ARP: {garp})");
    let after = settled(&vips);
    for (v, m) in &owners {
        if *m == victim_mac {
            assert_ne!(after[v], victim_mac, "{v} still answered by the killed node");
        } else {
            assert_eq!(after[v], *m, "{v} moved though its owner lives");
        }
    }
    for n in nodes.iter_mut().filter(|n| n.xlb.is_some()) {
        n.xlb.as_mut().unwrap().stop();
    }
}

fn run_kill(pid: u32) {
    support::run("kill", &["-INT", &pid.to_string()]);
}
