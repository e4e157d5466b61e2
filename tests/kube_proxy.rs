//! Pods behind worker nodes, reached through a REAL kube-proxy (nftables mode) on each node
//! (Kubernetes issue 19: traffic reaches pods through the nodes' service proxy). The lab: a
//! client on the LAN 10.77.0.0/24, two workers (10.77.0.31, .32) with two pods each on their
//! pod CIDRs 10.244.1.0/24 and 10.244.2.0/24 (host-gw routes between the workers), one
//! Service of type LoadBalancer (port 80 -> targetPort 8080) on the VIP 10.77.0.200, a real
//! API server (scripts/k8s/apiserver.sh) and the Node and EndpointSlice objects the tests write
//! themselves (there is no kubelet or controller-manager).
//!
//! - kube-proxy alone: the client routes the VIP to worker-1 (a static route). With
//!   externalTrafficPolicy Cluster the pods of both workers answer and see a worker's
//!   address (masquerade); with Local only worker-1's pods answer, and they see the client.
//! - with xlb: one xlb node (10.77.0.2) announces the VIP (ARP) and forwards every flow in DSR
//!   to a worker (the default path, no xlb annotation on the Service), whose kube-proxy maps
//!   VIP:80 to a pod. No static route on the client. With Local, only the workers with a
//!   ready pod get flows, and the pods see the client's address.
//!
//! Figures are printed (`cargo test --test kube_proxy -- --nocapture --test-threads=1`). Needs
//! root and the Kubernetes binaries: under CI=true, missing either is a failure.

#![allow(clippy::unwrap_used)] // test code: a panic is the report

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use support::{
    cluster::{endpoint_slice, node_object, route_pod_cidrs, Worker},
    kube::Api,
    run,
    traffic::{hold, in_netns, tcp_connections, udp_echo, Outcome},
    Host, Lab, Xlb,
};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const XLB_NODE: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 200);
/// The address the gateway-style Service asks for.
const GATEWAY_VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 201);
/// The client's and the IPv6 Service's addresses in the dual-stack lab.
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x200);
/// The pods' IPv6 port (the IPv6 Service's targetPort).
const POD_PORT6: u16 = 8086;
/// The pods' port (the Service's targetPort).
const POD_PORT: u16 = 8080;
const CONNECTIONS: usize = 20;

/// The tests of this file take turns: each runs an API server, kube-proxies and pods on two
/// cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The client and two workers with two pods each, routed to each other's pod CIDRs, their
/// Node objects written (label role=worker); with `v6`, all of it dual-stack (the client
/// at fd77::1, worker i at fd77::3i, its pods serving IPv6 on [`POD_PORT6`]).
fn client_and_workers(lab: &mut Lab, api: &Api, v6: bool) -> (Host, Vec<Worker>) {
    let client6 = format!("{CLIENT6}/64");
    let client4 = format!("{CLIENT}/24");
    let client_addrs: Vec<&str> = if v6 { vec![&client4, &client6] } else { vec![&client4] };
    let client = lab.host("client", &client_addrs, 1);
    let mut workers: Vec<Worker> =
        (1..=2).map(|i| Worker::new(lab, i, Ipv4Addr::new(10, 77, 0, 30 + i), 2, POD_PORT)).collect();
    if v6 {
        for (i, w) in (1..).zip(workers.iter_mut()) {
            w.add_ipv6(lab, i, Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x30 + u16::from(i)), POD_PORT6);
        }
    }
    route_pod_cidrs(&workers.iter().collect::<Vec<_>>(), &[]);
    for w in &workers {
        w.register(api, &[("role", "worker")]);
    }
    (client, workers)
}

/// Service `web` (TCP "http" and UDP "udp", both 80 -> 8080, externalTrafficPolicy Cluster)
/// with the lines `metadata` and `spec` added under those keys (YAML, indented by two), and
/// its EndpointSlice: every pod, ready.
fn web_service(api: &Api, workers: &[Worker], metadata: &str, spec: &str) {
    api.apply(&format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n{metadata}spec:\n  type: LoadBalancer\n  externalTrafficPolicy: Cluster\n{spec}  ports:\n  - {{name: http, port: 80, targetPort: {POD_PORT}, protocol: TCP}}\n  - {{name: udp, port: 80, targetPort: {POD_PORT}, protocol: UDP}}\n"
    ));
    let endpoints: Vec<_> = workers.iter().flat_map(|w| w.endpoints(true)).collect();
    endpoint_slice(api, "web", &[("http", POD_PORT, "TCP"), ("udp", POD_PORT, "UDP")], &endpoints);
}

/// Sets the Service's externalTrafficPolicy and waits until every worker's kube-proxy has
/// rewritten its rules (its table changed).
fn set_policy(api: &Api, workers: &mut [Worker], policy: &str) {
    // A change still on its way to kube-proxy (an EndpointSlice applied just before) would
    // pass for this one: each worker's rules settle first. (CI once saw the pods meet
    // worker-1's masquerade address under Local: kube-proxy had not applied the policy yet.)
    let before: Vec<String> = workers.iter_mut().map(|w| w.kube_proxy().settled(Duration::from_secs(20))).collect();
    let patch = format!("{{\"spec\": {{\"externalTrafficPolicy\": \"{policy}\"}}}}");
    api.kubectl(&["patch", "svc", "web", "--type=merge", "-p", &patch]);
    for (w, before) in workers.iter_mut().zip(before) {
        w.kube_proxy().wait_changed(&before, Duration::from_secs(20));
    }
}

/// `CONNECTIONS` TCP connections from the client to VIP:80, printed.
fn connect(client: &Host, what: &str) -> Outcome {
    let t0 = Instant::now();
    let out = in_netns(&client.ns, || tcp_connections(SocketAddr::from((VIP, 80)), CONNECTIONS));
    let by: BTreeMap<_, _> = out.by_backend.iter().collect();
    println!("{what}: {CONNECTIONS} connections in {:?}: answered by {by:?}, pods saw {:?}", t0.elapsed(), out.peers);
    assert!(
        out.failures.is_empty(),
        "{what}: {} of {CONNECTIONS} connections failed: {:?}",
        out.failures.len(),
        &out.failures[..out.failures.len().min(5)]
    );
    assert_eq!(out.by_backend.values().sum::<usize>(), CONNECTIONS, "{what}");
    out
}

/// The workers whose pods answered.
fn workers_used(out: &Outcome, workers: &[Worker]) -> BTreeSet<String> {
    workers
        .iter()
        .filter(|w| w.pods.iter().any(|p| out.by_backend.contains_key(&p.name)))
        .map(|w| w.name.clone())
        .collect()
}

/// Every address of the workers (LAN and pod gateway): what a pod sees of masqueraded traffic.
fn worker_addresses(workers: &[Worker]) -> BTreeSet<String> {
    workers.iter().flat_map(|w| [w.ip.to_string(), w.gateway.to_string()]).collect()
}

fn all_names(workers: &[Worker]) -> BTreeSet<String> {
    workers.iter().map(|w| w.name.clone()).collect()
}

#[test]
fn kube_proxy_alone_serves_a_load_balancer_ip_with_cluster_and_local_policies() {
    let _turn = one_at_a_time();
    let Some(mut lab) = Lab::new("kube_proxy_alone") else { return };
    let Some(api) = Api::start() else { return };
    let t0 = Instant::now();
    let (client, mut workers) = client_and_workers(&mut lab, &api, false);
    web_service(&api, &workers, "", "");
    // No load balancer here: the admin writes the address, as a cloud's controller would.
    let status = format!("{{\"status\": {{\"loadBalancer\": {{\"ingress\": [{{\"ip\": \"{VIP}\"}}]}}}}}}");
    api.kubectl(&["patch", "svc", "web", "--subresource=status", "--type=merge", "-p", &status]);
    for w in &mut workers {
        w.start_kube_proxy(&lab, &api);
        w.kube_proxy().wait_rules(&format!("{VIP} . tcp . 80"), Duration::from_secs(20));
    }
    run("ip", &["-n", &client.ns, "route", "add", &format!("{VIP}/32"), "via", &workers[0].ip.to_string()]);
    println!("lab, API server and 2 kube-proxies ready after {:?}", t0.elapsed());

    // Cluster: worker-1 spreads over every pod, masquerading (pods on worker-1 see its pod
    // gateway, those on worker-2 its LAN address).
    let out = connect(&client, "kube-proxy alone, Cluster");
    assert_eq!(workers_used(&out, &workers), all_names(&workers), "Cluster: both workers' pods answer");
    assert!(
        out.peers.is_subset(&worker_addresses(&workers)) && !out.peers.contains(&CLIENT.to_string()),
        "Cluster: pods should see a worker's address, saw {:?}",
        out.peers
    );
    // UDP the same way (its replies come back from the VIP).
    let replies = udp_echo(&client.ns, SocketAddr::from((VIP, 80)), 5);
    println!("kube-proxy alone, Cluster, UDP: {replies:?}");
    assert_eq!(replies.len(), 5, "UDP through kube-proxy: {replies:?}");
    let pods: BTreeSet<String> = workers.iter().flat_map(|w| w.pods.iter().map(|p| p.name.clone())).collect();
    for (from, text) in &replies {
        assert_eq!(*from, SocketAddr::from((VIP, 80)), "UDP reply from {from}");
        assert!(pods.contains(text.split(' ').next().unwrap()), "UDP reply {text:?}");
    }

    // Local: only worker-1's own pods, and they see the client.
    set_policy(&api, &mut workers, "Local");
    let out = connect(&client, "kube-proxy alone, Local");
    assert_eq!(workers_used(&out, &workers), BTreeSet::from([workers[0].name.clone()]), "Local: worker-1's pods only");
    assert_eq!(out.peers, BTreeSet::from([CLIENT.to_string()]), "Local: pods see the client");
    for w in &mut workers {
        let warnings = w.kube_proxy().warnings();
        // The first sync of each family logs "Failed to list existing nftables objects": a
        // new namespace has no table of kube-proxy's yet.
        println!("{}: kube-proxy's warnings and errors: {warnings:#?}", w.name);
    }
    println!("test done after {:?}", t0.elapsed());
}

/// The lab of the xlb tests: client, workers (kube-proxy running, the Service's rules in
/// place) and one xlb node (`xlb-1`, 10.77.0.2) announcing the VIP; the Service `web` in the
/// pool of the VIP, as a user writes it (no xlb annotation).
struct XlbLab {
    lab: Lab,
    api: Api,
    client: Host,
    xlb_host: Host,
    workers: Vec<Worker>,
    xlb: Xlb,
}

fn xlb_lab(test: &str) -> Option<XlbLab> {
    let mut l = xlb_lab_with(test, "  labels: {pool: lab}\n", "  loadBalancerClass: xlb.dev/xlb\n", &[], false)?;
    wait_resolved(&l.xlb, &l.workers.iter().map(|w| w.ip).collect::<Vec<_>>());
    l.xlb.wait_log("to=\"owned\"", Duration::from_secs(20));
    Some(l)
}

/// Waits until xlb has resolved the next hop of every one of `hops` (the log says it).
fn wait_resolved(xlb: &Xlb, hops: &[Ipv4Addr]) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let log = xlb.log_text();
        let done = |h: &Ipv4Addr| log.lines().any(|l| l.contains("next hop resolved") && l.contains(&format!("={h}")));
        if hops.iter().all(done) {
            return;
        }
        assert!(Instant::now() < end, "xlb did not resolve {hops:?}:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`xlb_lab`] with the Service's `metadata` and `spec` lines and xlb's extra `args` (`v6`:
/// dual-stack, and the pool has IPv6 addresses too); the VIP allocated and the workers'
/// rules in place, nothing more waited for.
fn xlb_lab_with(test: &str, metadata: &str, spec: &str, args: &[&str], v6: bool) -> Option<XlbLab> {
    let mut lab = Lab::new(test)?;
    let api = Api::start()?;
    let t0 = Instant::now();
    let (client, mut workers) = client_and_workers(&mut lab, &api, v6);
    let (xlb4, xlb6) = (format!("{XLB_NODE}/24"), "fd77::2/64".to_string());
    let xlb_host = lab.host("xlb", &if v6 { vec![xlb4.as_str(), xlb6.as_str()] } else { vec![xlb4.as_str()] }, 1);
    // The xlb node's Node object: selected by the announcement policy (ingress=true), with
    // its InternalIP as a real node has. xlb takes every packet for the VIP into its own
    // XDP program, so it must never be one of its backends (`own_address_is_no_backend`).
    node_object(&api, "xlb-1", &[IpAddr::V4(XLB_NODE)], &[], &[("ingress", "true")]);
    // The pool as the homelab of seed 001 writes its Cilium one: a block, every Service.
    let block6 = if v6 { format!(", {{start: '{VIP6}', stop: '{VIP6}'}}") } else { String::new() };
    api.apply(&format!("apiVersion: xlb.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {{name: lab}}\nspec:\n  blocks: [{{start: {VIP}, stop: {GATEWAY_VIP}}}{block6}]\n  allowFirstLastIPs: 'Yes'\n"));
    api.apply("apiVersion: xlb.dev/v1alpha1\nkind: L2AnnouncementPolicy\nmetadata: {name: ingress}\nspec:\n  loadBalancerIPs: true\n  interfaces: ['eth[0-9]+']\n  nodeSelector: {matchLabels: {ingress: 'true'}}\n");
    web_service(&api, &workers, metadata, spec);
    for w in &mut workers {
        w.start_kube_proxy(&lab, &api);
    }
    api.reach_from(&xlb_host.ns);
    let mut all = vec!["--kubernetes", "--node-name", "xlb-1", "--kubeconfig", &api.xlb];
    all.extend_from_slice(args);
    let xlb = Xlb::start(&lab, &xlb_host, &all);
    api.wait_for("the VIP allocated", 30, &xlb.log, |api| api.ingress("web").trim() == VIP.to_string());
    for w in &mut workers {
        w.kube_proxy().wait_rules(&format!("{VIP} . tcp . 80"), Duration::from_secs(20));
    }
    println!("lab, API server, 2 kube-proxies and xlb ready after {:?}", t0.elapsed());
    Some(XlbLab { lab, api, client, xlb_host, workers, xlb })
}

/// xlb's backends of `web` (`xlb backend list`): (service, address:port, weight, packets),
/// draining ones (weight 0) included; the table printed under `what` when given.
fn xlb_backends(xlb: &Xlb, what: Option<&str>) -> Vec<(String, String, u64, u64)> {
    if let Some(what) = what {
        println!("{what}: xlb backend list:\n{}", xlb.cli(&["backend", "list"]).1);
    }
    backend_rows(xlb)
        .iter()
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap_or_default().to_string();
            (s("service"), s("backend"), b["weight"].as_u64().unwrap_or(0), b["packets"].as_u64().unwrap_or(0))
        })
        .filter(|(service, ..)| service.starts_with("default/web/"))
        .collect()
}

/// The xlb node is not among its own backends.
fn own_address_is_no_backend(backends: &[(String, String, u64, u64)]) {
    let own = format!("{XLB_NODE}:");
    let mine: Vec<_> = backends.iter().filter(|(_, b, ..)| b.starts_with(&own)).collect();
    assert!(mine.is_empty(), "xlb lists its own node as a backend: {mine:?}");
}

#[test]
fn xlb_forwards_to_workers_whose_kube_proxy_reaches_the_pods() {
    let _turn = one_at_a_time();
    let Some(XlbLab { lab: _lab, api: _api, client, workers, mut xlb, .. }) = xlb_lab("xlb_and_kube_proxy") else {
        return;
    };
    let t0 = Instant::now();
    let (ok, status, err) = xlb.cli(&["status"]);
    assert!(ok, "xlb status: {err}");
    assert!(owns(&xlb, VIP), "xlb should own the VIP:\n{status}");
    // The client has no route for the VIP: it finds xlb by ARP, on the LAN.
    let routes = String::from_utf8_lossy(&run("ip", &["-n", &client.ns, "route", "show"]).stdout).into_owned();
    assert!(!routes.contains(&VIP.to_string()), "{routes}");

    // Cluster: xlb spreads the flows over both workers (DSR: the frame's destination MAC
    // rewritten, VIP:80 kept), each worker's kube-proxy over every pod (masquerading).
    let out = connect(&client, "xlb + kube-proxy, Cluster");
    assert_eq!(workers_used(&out, &workers), all_names(&workers), "Cluster: both workers' pods answer");
    assert!(
        out.peers.is_subset(&worker_addresses(&workers)),
        "Cluster: pods should see a worker's address, saw {:?}",
        out.peers
    );
    let replies = udp_echo(&client.ns, SocketAddr::from((VIP, 80)), 5);
    println!("xlb + kube-proxy, Cluster, UDP: {replies:?}");
    assert_eq!(replies.len(), 5, "UDP through xlb and kube-proxy: {replies:?}");
    assert!(replies.iter().all(|(from, _)| *from == SocketAddr::from((VIP, 80))), "{replies:?}");
    let backends = xlb_backends(&xlb, Some("Cluster"));
    for w in &workers {
        let addr = format!("{}:80", w.ip);
        let p = backends.iter().filter(|(_, b, ..)| *b == addr).map(|b| b.3).sum::<u64>();
        assert!(p > 0, "xlb sent nothing to {} ({addr}): {backends:?}", w.name);
    }
    own_address_is_no_backend(&backends);
    xlb.stop();
    println!("test done after {:?}", t0.elapsed());
}

/// With externalTrafficPolicy Local, a worker without a ready pod of the Service drops its
/// traffic (kube-proxy keeps no rule to other nodes' pods): xlb must send every flow to
/// the workers that have one.
/// The xlb node has no pod of its own and still announces the VIP: through the nodes, the
/// workers keep the client's address.
#[test]
fn xlb_sends_local_traffic_only_to_workers_with_a_ready_pod() {
    let _turn = one_at_a_time();
    let Some(XlbLab { lab: _lab, api, client, mut workers, mut xlb, .. }) = xlb_lab("xlb_and_kube_proxy_local") else {
        return;
    };
    let t0 = Instant::now();
    // worker-2's pods not ready: only worker-1 has a ready pod of the Service.
    let endpoints: Vec<_> = workers[0].endpoints(true).into_iter().chain(workers[1].endpoints(false)).collect();
    endpoint_slice(&api, "web", &[("http", POD_PORT, "TCP"), ("udp", POD_PORT, "UDP")], &endpoints);
    set_policy(&api, &mut workers, "Local");
    // xlb has seen it when its only backend taking new flows is worker-1 (the others drain).
    let want = vec![format!("{}:80", workers[0].ip)];
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let tcp: Vec<String> = xlb_backends(&xlb, None)
            .into_iter()
            .filter(|(s, _, weight, _)| s == "default/web/tcp:80" && *weight > 0)
            .map(|b| b.1)
            .collect();
        let (_, status, _) = xlb.cli(&["status"]);
        let owned = owns(&xlb, VIP);
        if tcp == want && owned {
            break;
        }
        assert!(
            Instant::now() < end,
            "xlb's backends {tcp:?} (want {want:?}), VIP owned: {owned}; status:\n{status}\n{}",
            xlb.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The client asks again who has the VIP (no stale ARP entry from before the change).
    run("ip", &["-n", &client.ns, "neigh", "flush", "all"]);
    let out = connect(&client, "xlb + kube-proxy, Local (ready pods on worker-1 only)");
    assert_eq!(workers_used(&out, &workers), BTreeSet::from([workers[0].name.clone()]), "Local: worker-1's pods only");
    assert_eq!(out.peers, BTreeSet::from([CLIENT.to_string()]), "Local: pods see the client");
    own_address_is_no_backend(&xlb_backends(&xlb, Some("Local")));
    xlb.stop();
    println!("test done after {:?}", t0.elapsed());
}

/// The Service's `xlb.dev/BackendsReachable` condition: "STATUS|MESSAGE".
fn reachable(api: &Api) -> String {
    api.kubectl(&[
        "get",
        "svc",
        "web",
        "-o",
        r#"jsonpath={.status.conditions[?(@.type=="xlb.dev/BackendsReachable")].status}|{.status.conditions[?(@.type=="xlb.dev/BackendsReachable")].message}"#,
    ])
}

/// The rows of `xlb backend list -o json`.
fn backend_rows(xlb: &Xlb) -> Vec<serde_json::Value> {
    let (ok, json, err) = xlb.cli(&["backend", "list", "-o", "json"]);
    assert!(ok, "xlb backend list: {err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["backends"].as_array().unwrap().clone()
}

/// xlb's backends of `web/tcp:80` from `xlb backend list -o json`: address -> (path, problem).
fn paths(xlb: &Xlb) -> BTreeMap<String, (String, String)> {
    backend_rows(xlb)
        .iter()
        .filter(|b| b["service"] == "default/web/tcp:80")
        .map(|b| {
            let s = |k: &str| b[k].as_str().unwrap_or_default().to_string();
            (s("backend"), (s("path"), s("path_problem")))
        })
        .collect()
}

/// Straight to routed pods, as a cluster whose pod CIDRs the ingress node's kernel routes
/// (native routing, host-gw, BGP CNIs): `xlb.dev/backends: endpoints`, SNAT (the default on
/// that path), next hops from the kernel's routes. Worker-2's pod CIDR has no route on the
/// xlb node at first: its pods are unreachable, said on the Service (condition and Warning
/// Event) and in `xlb backend list`, and worker-1's pods take every connection. Once the
/// route is added, xlb follows it (route notifications) and the condition turns True.
#[test]
fn routed_pods_direct_in_snat_and_an_unreachable_pod_said_on_the_service() {
    let _turn = one_at_a_time();
    let meta = "  labels: {pool: lab}\n  annotations: {xlb.dev/backends: endpoints}\n";
    let Some(XlbLab { lab: _lab, api, client, xlb_host, workers, mut xlb }) = xlb_lab_with(
        "routed_pods_snat",
        meta,
        "  loadBalancerClass: xlb.dev/xlb\n",
        &["--snat-addr", "10.77.0.91"],
        false,
    ) else {
        return;
    };
    // The xlb node's kernel routes worker-1's pod CIDR (as a BGP CNI would), not worker-2's.
    let (w1, w2) = (&workers[0], &workers[1]);
    run("ip", &["-n", &xlb_host.ns, "route", "add", &w1.pod_cidr, "via", &w1.ip.to_string()]);
    wait_resolved(&xlb, &w1.pods.iter().map(|p| p.ip).collect::<Vec<_>>());
    xlb.wait_log("to=\"owned\"", Duration::from_secs(20));
    let log = xlb.log.clone();
    api.wait_for("the condition False, naming worker-2's pods", 20, &log, |api| {
        let c = reachable(api);
        c.starts_with("False|")
            && w2.pods.iter().all(|p| c.contains(&format!("backend {}:", p.ip)))
            && !w1.pods.iter().any(|p| c.contains(&format!("backend {}:", p.ip)))
    });
    let cond = reachable(&api);
    println!("condition with worker-2's pod CIDR unrouted: {cond}");
    assert!(cond.contains("no route leads to it") && cond.contains("reach the pods through the nodes"), "{cond}");
    api.wait_for("the Warning Event", 10, &log, |api| api.events().contains("BackendUnreachable web "));
    let p = paths(&xlb);
    println!("paths: {p:#?}");
    for pod in &w1.pods {
        assert_eq!(p[&format!("{}:{POD_PORT}", pod.ip)].0, format!("via {}", w1.ip), "{p:?}");
    }
    for pod in &w2.pods {
        let (path, problem) = &p[&format!("{}:{POD_PORT}", pod.ip)];
        assert_eq!(path, "unreachable", "{p:?}");
        assert!(problem.contains("not on eth0's segment and no route leads to it"), "{p:?}");
    }
    // Worker-1's pods take every connection, and see the node's SNAT address.
    let out = connect(&client, "straight to routed pods (worker-2's unreachable)");
    assert_eq!(workers_used(&out, &workers), BTreeSet::from([w1.name.clone()]));
    assert_eq!(out.peers, BTreeSet::from(["10.77.0.91".to_string()]), "SNAT: pods see xlb's SNAT address");

    // The route appears: xlb follows it without a restart or a config change.
    let t0 = Instant::now();
    run("ip", &["-n", &xlb_host.ns, "route", "add", &w2.pod_cidr, "via", &w2.ip.to_string()]);
    let end = Instant::now() + Duration::from_secs(10);
    while !w2.pods.iter().all(|pod| paths(&xlb)[&format!("{}:{POD_PORT}", pod.ip)].0 == format!("via {}", w2.ip)) {
        assert!(Instant::now() < end, "xlb did not follow the new route: {:#?}", paths(&xlb));
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("new route followed after {:?}", t0.elapsed());
    wait_resolved(&xlb, &w2.pods.iter().map(|p| p.ip).collect::<Vec<_>>());
    api.wait_for("the condition True", 20, &log, |api| reachable(api).starts_with("True|"));
    api.wait_for("the recovery Event", 10, &log, |api| api.events().contains("BackendsReachable web "));
    let out = connect(&client, "straight to routed pods (all routed)");
    assert_eq!(workers_used(&out, &workers), all_names(&workers));

    // A path that changes under a live flow: worker-1's pod CIDR re-routed through worker-2
    // (which hands it on to worker-1, host-gw). The pods' next hop moves to worker-2's MAC
    // and a connection held to one of worker-1's pods goes on.
    let held = (0..20)
        .map(|_| in_netns(&client.ns, || hold(SocketAddr::from((VIP, 80)), Duration::from_secs(2))))
        .find(|(name, ..)| w1.pods.iter().any(|p| p.name == *name))
        .expect("one of 20 connections reaches a worker-1 pod");
    let (name, mut stream, mut reader) = held;
    let mut ping = |n: u32| -> String {
        stream.write_all(format!("ping {n}\n").as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap_or_else(|e| panic!("ping {n} on the held connection: {e}"));
        line.trim().to_string()
    };
    assert_eq!(ping(1), format!("{name} ping 1"));
    run("ip", &["netns", "exec", &w2.host.ns, "sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0"]);
    run("ip", &["netns", "exec", &w2.host.ns, "sysctl", "-qw", "net.ipv4.conf.eth0.send_redirects=0"]);
    let t0 = Instant::now();
    run("ip", &["-n", &xlb_host.ns, "route", "replace", &w1.pod_cidr, "via", &w2.ip.to_string()]);
    let end = Instant::now() + Duration::from_secs(10);
    while !w1.pods.iter().all(|pod| paths(&xlb)[&format!("{}:{POD_PORT}", pod.ip)].0 == format!("via {}", w2.ip)) {
        assert!(Instant::now() < end, "xlb did not follow the changed route: {:#?}", paths(&xlb));
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("changed route followed after {:?}", t0.elapsed());
    for n in 2..=20 {
        assert_eq!(ping(n), format!("{name} ping {n}"), "the held connection after the path moved");
    }
    let out = connect(&client, "straight to routed pods (worker-1's through worker-2)");
    assert_eq!(workers_used(&out, &workers), all_names(&workers));
    xlb.stop();
}

/// The homelab flow of a gateway controller (seed 001: Envoy Gateway copies
/// `lbipam.cilium.io/ips` from the Gateway's infrastructure annotations onto the Service it
/// makes, which names no class and maps 443 to the proxy's 10443), served by an xlb that
/// also serves unclassed Services; and `loadBalancerSourceRanges` letting one client in and
/// keeping another out, at xlb (counted as `source_range`), before any node sees it.
#[test]
fn a_gateway_style_service_and_source_ranges() {
    let _turn = one_at_a_time();
    let spec = "  loadBalancerClass: xlb.dev/xlb\n  loadBalancerSourceRanges: [10.77.0.1/32]\n";
    let Some(XlbLab { mut lab, api, client, workers, mut xlb, .. }) =
        xlb_lab_with("gateway_and_source_ranges", "  labels: {pool: lab}\n", spec, &["--unclassed"], false)
    else {
        return;
    };
    let outsider = lab.host("outsider", &["10.77.0.5/24"], 1);
    wait_resolved(&xlb, &workers.iter().map(|w| w.ip).collect::<Vec<_>>());
    xlb.wait_log("to=\"owned\"", Duration::from_secs(20));
    // The client in the range gets in; the outsider does not, and xlb counts why.
    connect(&client, "source range: the admitted client");
    let addr = SocketAddr::from((VIP, 80));
    let out = in_netns(&outsider.ns, move || tcp_connections(addr, 3));
    assert_eq!(out.failures.len(), 3, "the outsider got in: {out:?}");

    // The gateway's Service, as Envoy Gateway writes it.
    let gw_vip = GATEWAY_VIP;
    api.apply(&format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: envoy-gateway\n  namespace: default\n  annotations: {{lbipam.cilium.io/ips: '{gw_vip}'}}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Cluster\n  ports:\n  - {{name: https, port: 443, targetPort: 10443, protocol: TCP}}\n"));
    let endpoints: Vec<_> = workers.iter().flat_map(|w| w.endpoints(true)).collect();
    endpoint_slice(&api, "envoy-gateway", &[("https", 10443, "TCP")], &endpoints);
    for w in &workers {
        for pod in &w.pods {
            support::snat_backend(&lab, &Host { ns: pod.ns.clone(), mac: w.host.mac }, &pod.name, 10443, false);
        }
    }
    api.wait_for("the gateway's requested address", 20, &xlb.log, |api| {
        api.ingress("envoy-gateway") == gw_vip.to_string()
    });
    let mut ws = workers;
    for w in &mut ws {
        w.kube_proxy().wait_rules(&format!("{gw_vip} . tcp . 443"), Duration::from_secs(20));
    }
    let end = Instant::now() + Duration::from_secs(20);
    while !owns(&xlb, gw_vip) {
        assert!(Instant::now() < end, "xlb does not own {gw_vip}:\n{}", xlb.cli(&["status"]).1);
        std::thread::sleep(Duration::from_millis(100));
    }
    let gw = SocketAddr::from((gw_vip, 443));
    let out = in_netns(&client.ns, move || tcp_connections(gw, CONNECTIONS));
    println!("gateway-style Service {gw}: {:?}, failures {:?}", out.by_backend, out.failures);
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    assert_eq!(workers_used(&out, &ws), all_names(&ws));
    let stats = xlb.stop();
    let refused = stats["drops"]["source_range"].as_u64().unwrap();
    println!("source_range drops: {refused} (3 refused connections)");
    assert!(refused >= 3, "{}", stats["drops"]);
}

/// Whether `xlb status` says it owns `vip` (a line `VIP  owned ...`, columns padded).
fn owns(xlb: &Xlb, vip: impl std::fmt::Display) -> bool {
    let vip = vip.to_string();
    xlb.cli(&["status"]).1.lines().any(|l| {
        let mut words = l.split_whitespace();
        words.next() == Some(vip.as_str()) && words.next() == Some("owned")
    })
}

/// The small cluster of seed 001: no dedicated ingress nodes, xlb on every node (as Cilium's
/// L2 announcements run on "all Linux nodes"), that homelab's CiliumL2AnnouncementPolicy and
/// CiliumLoadBalancerIPPool unchanged (Cilium's kinds defined by `xlb crds --cilium`), a
/// Cilium pool for the lab's segment, and a Service with no class that asks for its address
/// with Cilium's annotation. The node that announces the VIP hands its packets
/// to its own kube-proxy (XDP passes them to the kernel), as MetalLB's and Cilium's L2 modes
/// do. Cluster: every pod answers; Local: only a node with a ready pod announces it, and the
/// pod sees the client.
#[test]
fn xlb_on_every_node_hands_traffic_to_the_announcing_nodes_proxy() {
    let _turn = one_at_a_time();
    let Some(mut lab) = Lab::new("xlb_on_every_node") else { return };
    let Some(api) = Api::start() else { return };
    let t0 = Instant::now();
    let client = lab.host("client", &[&format!("{CLIENT}/24")], 1);
    let mut workers: Vec<Worker> =
        (1..=2).map(|i| Worker::new(&mut lab, i, Ipv4Addr::new(10, 77, 0, 30 + i), 2, POD_PORT)).collect();
    route_pod_cidrs(&workers.iter().collect::<Vec<_>>(), &[]);
    for w in &workers {
        w.register(&api, &[("kubernetes.io/os", "linux")]);
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    api.apply_crds(&root.join("deploy/crds-cilium.yaml"));
    api.apply_file(&root.join("tests/fixtures/seeds/001-pitower-cilium.yaml"));
    api.apply(&format!("apiVersion: cilium.io/v2alpha1\nkind: CiliumLoadBalancerIPPool\nmetadata: {{name: lab}}\nspec:\n  blocks: [{{start: {VIP}, stop: {GATEWAY_VIP}}}]\n"));
    web_service(&api, &workers, &format!("  annotations: {{lbipam.cilium.io/ips: '{VIP}'}}\n"), "");
    let mut xlbs = Vec::new();
    for w in &mut workers {
        w.start_kube_proxy(&lab, &api);
        xlbs.push(Xlb::start(
            &lab,
            &w.host,
            &["--kubernetes", "--node-name", &w.name, "--kubeconfig", &api.xlb, "--unclassed"],
        ));
    }
    api.wait_for("the VIP allocated", 30, &xlbs[0].log, |api| api.ingress("web").trim() == VIP.to_string());
    for w in &mut workers {
        w.kube_proxy().wait_rules(&format!("{VIP} . tcp . 80"), Duration::from_secs(20));
    }
    let end = Instant::now() + Duration::from_secs(20);
    while xlbs.iter().filter(|x| owns(x, VIP)).count() != 1 {
        assert!(
            Instant::now() < end,
            "not exactly one owner of {VIP}:\n{}\n{}",
            xlbs[0].cli(&["status"]).1,
            xlbs[0].log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("lab, API server, 2 nodes with kube-proxy and xlb ready after {:?}", t0.elapsed());

    // Cluster: the announcing node's kube-proxy spreads over every pod of both nodes.
    let out = connect(&client, "xlb on every node, Cluster");
    assert_eq!(workers_used(&out, &workers), all_names(&workers), "Cluster: both nodes' pods answer");
    for x in &xlbs {
        let (_, list, _) = x.cli(&["backend", "list"]);
        assert!(list.lines().count() <= 1, "xlb's datapath has no backend here, the kernel has the traffic:\n{list}");
    }

    // Local: worker-2 alone has ready pods, so it announces the VIP, and its pods see the
    // client.
    let endpoints: Vec<_> = workers[0].endpoints(false).into_iter().chain(workers[1].endpoints(true)).collect();
    endpoint_slice(&api, "web", &[("http", POD_PORT, "TCP"), ("udp", POD_PORT, "UDP")], &endpoints);
    set_policy(&api, &mut workers, "Local");
    let end = Instant::now() + Duration::from_secs(20);
    while !owns(&xlbs[1], VIP) || owns(&xlbs[0], VIP) {
        assert!(Instant::now() < end, "worker-2 does not own {VIP}:\n{}", xlbs[1].cli(&["status"]).1);
        std::thread::sleep(Duration::from_millis(100));
    }
    run("ip", &["-n", &client.ns, "neigh", "flush", "all"]);
    let out = connect(&client, "xlb on every node, Local (ready pods on worker-2 only)");
    assert_eq!(workers_used(&out, &workers), BTreeSet::from([workers[1].name.clone()]));
    assert_eq!(out.peers, BTreeSet::from([CLIENT.to_string()]), "Local: pods see the client");
    // The XDP programs took the ARP requests for the VIP and passed its packets.
    let mut arp = 0;
    for x in &mut xlbs {
        let stats = x.stop();
        let c = &stats["xdp_classes"];
        println!("xlb's XDP classes: {c}");
        assert_eq!(c["vip_v4"], 0, "a VIP packet went to userspace instead of the kernel: {c}");
        arp += c["arp_request"].as_u64().unwrap();
    }
    assert!(arp > 0, "no ARP request for the VIP reached xlb");
    println!("test done after {:?}", t0.elapsed());
}

/// The default path over IPv6: a dual-stack lab (workers, pods and kube-proxy with both
/// families), a Service with `ipFamilies: [IPv6]`; xlb answers NDP for its address and
/// forwards each flow in DSR to a worker, whose kube-proxy (table ip6) maps it to a pod.
#[test]
fn the_default_path_over_ipv6() {
    let _turn = one_at_a_time();
    let Some(XlbLab { lab: _lab, api, client, mut workers, xlb, .. }) =
        xlb_lab_with("ipv6", "  labels: {pool: lab}\n", "  loadBalancerClass: xlb.dev/xlb\n", &[], true)
    else {
        return;
    };
    api.apply(&format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: web6\n  namespace: default\nspec:\n  type: LoadBalancer\n  loadBalancerClass: xlb.dev/xlb\n  ipFamilyPolicy: SingleStack\n  ipFamilies: [IPv6]\n  ports:\n  - {{name: http, port: 80, targetPort: {POD_PORT6}, protocol: TCP}}\n"));
    let endpoints: Vec<_> = workers.iter().flat_map(|w| w.endpoints6(true)).collect();
    endpoint_slice(&api, "web6", &[("http", POD_PORT6, "TCP")], &endpoints);
    api.wait_for("web6's IPv6 address", 20, &xlb.log, |api| api.ingress("web6") == VIP6.to_string());
    for w in &mut workers {
        w.kube_proxy().wait_rules(&format!("{VIP6} . tcp . 80"), Duration::from_secs(20));
    }
    let hops: Vec<Ipv6Addr> = workers.iter().filter_map(|w| w.ip6.as_ref().map(|x| x.0)).collect();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let log = xlb.log_text();
        let resolved =
            hops.iter().all(|h| log.lines().any(|l| l.contains("next hop resolved") && l.contains(&format!("={h}"))));
        if resolved && owns(&xlb, VIP6) {
            break;
        }
        assert!(Instant::now() < end, "xlb did not own {VIP6} with both workers resolved:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let addr = SocketAddr::from((VIP6, 80));
    let out = in_netns(&client.ns, move || tcp_connections(addr, CONNECTIONS));
    println!(
        "IPv6 through xlb and kube-proxy: {:?}, pods saw {:?}, failures {:?}",
        out.by_backend, out.peers, out.failures
    );
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    let used: BTreeSet<&str> = workers
        .iter()
        .filter(|w| w.pods.iter().any(|p| out.by_backend.contains_key(&format!("{}-v6", p.name))))
        .map(|w| w.name.as_str())
        .collect();
    assert_eq!(used.len(), 2, "both workers' pods answer over IPv6: {:?}", out.by_backend);
    assert!(!out.peers.contains(&CLIENT6.to_string()), "Cluster: the node's proxy masquerades: {:?}", out.peers);
}
