//! The allocator against a REAL Kubernetes API server (kube-apiserver + etcd built from the
//! Go module proxy by scripts/k8s/apiserver.sh, on loopback), running under the RBAC
//! identity that deploy/rbac.yaml grants, so that schema and permission mistakes fail here.
//! Under CI=true a missing API server is a failure, never a skip.

mod support;

use std::process::{Child, Command, Stdio};

use support::kube::Api;

/// Runs `xlb allocator` as the xlb ServiceAccount.
fn allocator(api: &Api, identity: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args(["allocator", "--kubeconfig", &api.xlb, "--identity", identity, "--lease-seconds", "4"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(api.dir.join(format!("{identity}.log"))).map_or(Stdio::null(), Stdio::from))
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn wait(api: &Api, what: &str, f: impl Fn(&Api) -> bool) {
    api.wait_for(what, 20, &api.dir.join("a.log"), f);
}

fn condition(api: &Api, svc: &str) -> String {
    api.kubectl(&["get", "svc", svc, "-o", r#"jsonpath={.status.conditions[?(@.type=="xlb.dev/IPAllocated")].reason}"#])
}

fn service(name: &str, port: u16, extra_ann: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{{extra_ann}}}\nspec:\n  type: LoadBalancer\n  loadBalancerClass: xlb.dev/xlb\n  ports: [{{port: {port}, protocol: TCP}}]\n"
    )
}

#[test]
fn allocator_against_a_real_api_server() {
    let Some(api) = Api::start() else { return };
    api.apply(
        "apiVersion: xlb.dev/v1alpha1\nkind: LoadBalancerIPPool\nmetadata: {name: public}\nspec:\n  blocks: [{cidr: 192.0.2.0/28}]\n",
    );
    let mut a = allocator(&api, "a");
    // A pool + a Service + its EndpointSlice: an address in the status, and an Event.
    api.apply(&service("web", 80, ""));
    api.apply("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\nports: [{name: '', port: 8080, protocol: TCP}]\nendpoints: [{addresses: [10.0.0.5], conditions: {ready: true}}]\n");
    wait(&api, "web's address", |api| api.ingress("web") == "192.0.2.1");
    assert_eq!(condition(&api, "web"), "Allocated");
    wait(&api, "the IPAllocated Event", |api| api.events().contains("IPAllocated web allocated 192.0.2.1"));
    // A request for a taken address: pending, with IPAllocationFailed.
    api.apply(&service("thief", 81, "lbipam.cilium.io/ips: 192.0.2.1"));
    wait(&api, "thief's failure", |api| condition(api, "thief") == "AllocationFailed");
    assert_eq!(api.ingress("thief"), "");
    let events = api.events();
    assert!(events.contains("IPAllocationFailed thief 192.0.2.1 is already assigned"), "{events}");
    // A sharing key with distinct ports shares; a clashing port does not.
    api.apply(&service("dns", 53, "lbipam.cilium.io/sharing-key: k"));
    api.apply(&service("dot", 853, "metallb.universe.tf/allow-shared-ip: k"));
    api.apply(&service("dns2", 53, "lbipam.cilium.io/sharing-key: k"));
    wait(&api, "shared address", |api| !api.ingress("dns").is_empty() && api.ingress("dns") == api.ingress("dot"));
    wait(&api, "dns2's clash", |api| condition(api, "dns2") == "AllocationFailed");
    // Deleting web frees its address: the thief gets it.
    api.kubectl(&["delete", "svc", "web"]);
    wait(&api, "thief's address", |api| api.ingress("thief") == "192.0.2.1");
    // Each new address is its own Event; the same one again counts up the first (a series).
    api.kubectl(&["annotate", "--overwrite", "svc", "thief", "lbipam.cilium.io/ips=192.0.2.9"]);
    wait(&api, "thief's second Event", |api| api.events().contains("IPAllocated thief allocated 192.0.2.9"));
    api.kubectl(&["annotate", "--overwrite", "svc", "thief", "lbipam.cilium.io/ips=192.0.2.1"]);
    wait(&api, "thief's first address again", |api| api.ingress("thief") == "192.0.2.1");
    let count = |api: &Api| {
        api.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-o",
            r#"jsonpath={range .items[?(@.regarding.name=="thief")]}{.reason} {.note} {.series.count}{"\n"}{end}"#,
        ])
    };
    wait(&api, "the first Event counted twice", |api| {
        count(api).lines().any(|l| l == "IPAllocated allocated 192.0.2.1 2")
    });
    let events = count(&api);
    assert_eq!(events.lines().filter(|l| l.starts_with("IPAllocated ")).count(), 2, "{events}");
    // Pool status: counts.
    wait(&api, "pool counts", |api| {
        api.kubectl(&["get", "lbpool", "public", "-o", "jsonpath={.status.counts.used}/{.status.counts.total}"])
            == "2/14"
    });
    // Restarting the allocator changes no address (a new one adopts the statuses).
    let before: Vec<String> = ["thief", "dns", "dot"].iter().map(|s| api.ingress(s)).collect();
    let _ = Command::new("kill").arg("-TERM").arg(a.id().to_string()).status();
    let _ = a.wait();
    api.apply(&service("late", 90, ""));
    let mut b = allocator(&api, "b");
    wait(&api, "late's address", |api| !api.ingress("late").is_empty());
    let after: Vec<String> = ["thief", "dns", "dot"].iter().map(|s| api.ingress(s)).collect();
    assert_eq!(before, after, "a restart moved an address");
    assert!(!before.contains(&api.ingress("late")), "late got an address already held");
    let _ = b.kill();
    let _ = b.wait();
}
