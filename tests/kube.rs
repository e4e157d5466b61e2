//! The allocator against a REAL Kubernetes API server (kube-apiserver + etcd built from the
//! Go module proxy by scripts/k8s/apiserver.sh, on loopback), running under the RBAC
//! identity that deploy/rbac.yaml grants, so that schema and permission mistakes fail here.
//! Under CI=true a missing API server is a failure, never a skip.

mod support;

use std::process::{Child, Command, Stdio};

use support::kube::Api;

/// Runs `xlb allocator` as the xlb ServiceAccount.
fn allocator(api: &Api, identity: &str) -> Child {
    allocator_with(api, identity, &[])
}

fn allocator_with(api: &Api, identity: &str, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args(["allocator", "--kubeconfig", &api.xlb, "--identity", identity, "--lease-seconds", "4"])
        .args(extra)
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
    // A pool + a Service + its EndpointSlice: an address in the status, and an Event. The
    // pool leaves allowFirstLastIPs unset: its first address is given, as Cilium gives it.
    api.apply(&service("web", 80, ""));
    api.apply("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\nports: [{name: '', port: 8080, protocol: TCP}]\nendpoints: [{addresses: [10.0.0.5], conditions: {ready: true}}]\n");
    wait(&api, "web's address", |api| api.ingress("web") == "192.0.2.0");
    assert_eq!(condition(&api, "web"), "Allocated");
    wait(&api, "the IPAllocated Event", |api| api.events().contains("IPAllocated web allocated 192.0.2.0"));
    // A request for a taken address: pending, with IPAllocationFailed.
    api.apply(&service("thief", 81, "lbipam.cilium.io/ips: 192.0.2.0"));
    wait(&api, "thief's failure", |api| condition(api, "thief") == "AllocationFailed");
    assert_eq!(api.ingress("thief"), "");
    let events = api.events();
    assert!(events.contains("IPAllocationFailed thief 192.0.2.0 is already assigned"), "{events}");
    // A sharing key with distinct ports shares (Cilium's key and MetalLB's alike); a
    // clashing port gets an address of its own at once.
    api.apply(&service("dns", 53, "lbipam.cilium.io/sharing-key: k"));
    api.apply(&service("dot", 853, "metallb.universe.tf/allow-shared-ip: k"));
    api.apply(&service("dns2", 53, "lbipam.cilium.io/sharing-key: k"));
    wait(&api, "shared address", |api| !api.ingress("dns").is_empty() && api.ingress("dns") == api.ingress("dot"));
    wait(&api, "dns2's own address", |api| condition(api, "dns2") == "Allocated");
    assert_ne!(api.ingress("dns2"), api.ingress("dns"));
    // Deleting web frees its address: the thief gets it.
    api.kubectl(&["delete", "svc", "web"]);
    wait(&api, "thief's address", |api| api.ingress("thief") == "192.0.2.0");
    // Each new address is its own Event; the same one again counts up the first (a series).
    api.kubectl(&["annotate", "--overwrite", "svc", "thief", "lbipam.cilium.io/ips=192.0.2.9"]);
    wait(&api, "thief's second Event", |api| api.events().contains("IPAllocated thief allocated 192.0.2.9"));
    api.kubectl(&["annotate", "--overwrite", "svc", "thief", "lbipam.cilium.io/ips=192.0.2.0"]);
    wait(&api, "thief's first address again", |api| api.ingress("thief") == "192.0.2.0");
    let count = |api: &Api| {
        api.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-o",
            r#"jsonpath={range .items[?(@.regarding.name=="thief")]}{.reason} {.note} {.series.count}{"\n"}{end}"#,
        ])
    };
    wait(&api, "the first Event counted twice", |api| {
        count(api).lines().any(|l| l == "IPAllocated allocated 192.0.2.0 2")
    });
    let events = count(&api);
    assert_eq!(events.lines().filter(|l| l.starts_with("IPAllocated ")).count(), 2, "{events}");
    // Pool status: counts.
    wait(&api, "pool counts", |api| {
        api.kubectl(&["get", "lbpool", "public", "-o", "jsonpath={.status.counts.used}/{.status.counts.total}"])
            == "3/16"
    });
    // Restarting the allocator changes no address (a new one adopts the statuses).
    let before: Vec<String> = ["thief", "dns", "dot", "dns2"].iter().map(|s| api.ingress(s)).collect();
    let _ = Command::new("kill").arg("-TERM").arg(a.id().to_string()).status();
    let _ = a.wait();
    api.apply(&service("late", 90, ""));
    let mut b = allocator(&api, "b");
    wait(&api, "late's address", |api| !api.ingress("late").is_empty());
    let after: Vec<String> = ["thief", "dns", "dot", "dns2"].iter().map(|s| api.ingress(s)).collect();
    assert_eq!(before, after, "a restart moved an address");
    assert!(!before.contains(&api.ingress("late")), "late got an address already held");
    let _ = b.kill();
    let _ = b.wait();
}

/// A Service's condition of `type_`, as "status reason".
fn cond(api: &Api, svc: &str, type_: &str) -> String {
    api.kubectl(&[
        "get",
        "svc",
        svc,
        "-o",
        &format!(r#"jsonpath={{.status.conditions[?(@.type=="{type_}")].status}} {{.status.conditions[?(@.type=="{type_}")].reason}}"#),
    ])
}

const CILIUM: &str = "cilium.io/IPAMRequestSatisfied";

/// Cilium's manifests from the seed documents, applied unchanged to a cluster without Cilium
/// (xlb's definitions of Cilium's kinds, `xlb crds --cilium`), get the addresses and the
/// conditions Cilium's LB-IPAM gives them (operator/pkg/lbipam/lbipam.go at cilium/cilium
/// a1ef884: `satisfySpecificIPRequests`, `setSVCSatisfiedCondition`, `settleConflicts`,
/// `updatePoolCounts`, `isResponsibleForSVC`).
#[test]
fn cilium_manifests_from_the_seeds_work_unchanged() {
    let Some(api) = Api::start() else { return };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    api.apply_crds(&root.join("deploy/crds-cilium.yaml"));
    let seeds = root.join("tests/fixtures/seeds");
    api.apply_file(&seeds.join("001-pitower-cilium.yaml"));
    // Cilium serves Services without a class: so does xlb here.
    let mut a = allocator_with(&api, "a", &["--unclassed"]);
    api.apply_file(&seeds.join("001-pitower-service.yaml"));
    api.apply("apiVersion: v1\nkind: Service\nmetadata: {name: auto}\nspec: {type: LoadBalancer, ports: [{port: 53, protocol: UDP}]}\n");
    wait(&api, "my-service's requested address", |api| api.ingress("my-service") == "192.168.0.223");
    wait(&api, "auto's address, the first of the range", |api| api.ingress("auto") == "192.168.0.220");
    wait(&api, "Cilium's condition", |api| cond(api, "my-service", CILIUM) == "True satisfied");
    assert_eq!(cond(&api, "my-service", "xlb.dev/IPAllocated"), "True Allocated");
    // The pool's status as Cilium writes it: `kubectl get ippools` shows what it shows.
    wait(&api, "the pool's counts", |api| {
        api.kubectl(&[
            "get",
            "ippools",
            "pool",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="cilium.io/IPsAvailable")].message}"#,
        ]) == "18"
    });
    let table = api.kubectl(&["get", "ippools"]);
    assert!(
        table.contains("IPS AVAILABLE")
            && table.lines().any(|l| l.starts_with("pool ") && l.contains(" False ") && l.contains(" 18 ")),
        "{table}"
    );
    // Seed 004's Cilium pool is disabled, so its address is not given (Cilium: no_pool).
    api.apply_file(&seeds.join("004-cilium-pool.yaml"));
    api.apply_file(&seeds.join("004-service.yaml"));
    wait(&api, "nginx-demo-lb's refusal", |api| cond(api, "nginx-demo-lb", CILIUM) == "False no_pool");
    assert_eq!(api.ingress("nginx-demo-lb"), "");
    assert!(
        api.events().contains("nginx-demo-lb pool CiliumLoadBalancerIPPool/metallb-integration is disabled"),
        "{}",
        api.events()
    );
    // An older pool edited to overlap a newer one: the newer one is marked conflicting
    // (`settleConflicts`), and the address it gave stays where it is.
    api.apply("apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: newer}\nspec:\n  blocks: [{cidr: 192.168.2.0/29}]\n");
    api.apply("apiVersion: v1\nkind: Service\nmetadata: {name: tenant, annotations: {lbipam.cilium.io/ips: 192.168.2.3}}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n");
    wait(&api, "tenant's address", |api| api.ingress("tenant") == "192.168.2.3");
    api.kubectl(&[
        "patch",
        "ippools",
        "pool",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/spec/blocks/-","value":{"cidr":"192.168.2.0/28"}}]"#,
    ]);
    let conflict = |api: &Api, pool: &str| {
        api.kubectl(&[
            "get",
            "ippools",
            pool,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="cilium.io/PoolConflict")].status}"#,
        ])
    };
    wait(&api, "the newer pool's conflict", |api| conflict(api, "newer") == "True");
    assert_eq!(conflict(&api, "pool"), "False");
    assert_eq!(api.ingress("tenant"), "192.168.2.3");
    assert_eq!(cond(&api, "tenant", CILIUM), "True satisfied");
    // A taken address, requested: already_allocated, as in Cilium.
    api.apply("apiVersion: v1\nkind: Service\nmetadata: {name: thief, annotations: {lbipam.cilium.io/ips: 192.168.0.223}}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n");
    wait(&api, "thief's refusal", |api| cond(api, "thief", CILIUM) == "False already_allocated");
    // Changed away from LoadBalancer: the address and both conditions go.
    api.kubectl(&["patch", "svc", "auto", "-p", r#"{"spec":{"type":"ClusterIP"}}"#]);
    wait(&api, "auto's status cleared", |api| {
        api.ingress("auto").is_empty() && cond(api, "auto", CILIUM).trim().is_empty()
    });
    assert!(cond(&api, "auto", "xlb.dev/IPAllocated").trim().is_empty());
    // A restart adopts everything, the address of the conflicting pool included (Cilium's
    // `stripOrImportIngresses` would drop it).
    let before: Vec<String> = ["my-service", "tenant"].iter().map(|s| api.ingress(s)).collect();
    let _ = Command::new("kill").arg("-TERM").arg(a.id().to_string()).status();
    let _ = a.wait();
    let mut b = allocator_with(&api, "b", &["--unclassed"]);
    api.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: late}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n",
    );
    wait(&api, "late's address", |api| !api.ingress("late").is_empty());
    let after: Vec<String> = ["my-service", "tenant"].iter().map(|s| api.ingress(s)).collect();
    assert_eq!(before, after, "a restart moved an address");
    assert_eq!(cond(&api, "tenant", CILIUM), "True satisfied");
    let _ = b.kill();
    let _ = b.wait();
}

/// Seed 002's two pools and two policies (one per interface, `eno1` internal, `eno2`
/// public), unchanged: each Service gets the first address of the pool its label selects
/// (Cilium's `isResponsibleForSVC` matches a pool's serviceSelector to the Service's
/// labels), and the policies are read, not refused. Seed 003's BGP peering policy is said
/// not to be served, on the object. Which interface each VIP is announced
/// on is the node side's: `k8s::plan` tests it with these policies, tests/forwarding.rs on
/// the wire.
#[test]
fn seed_002_each_interface_has_its_pool() {
    let Some(api) = Api::start() else { return };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    api.apply_crds(&root.join("deploy/crds-cilium.yaml"));
    let seeds = root.join("tests/fixtures/seeds");
    api.apply_file(&seeds.join("002-multi-interface.yaml"));
    // Seed 003's BGP peering policy, served as xlb's BGP objects.
    api.apply_crds(&root.join("tests/fixtures/cilium-bgp-crd-for-tests.yaml"));
    api.apply_file(&seeds.join("003-bgp.yaml"));
    let mut a = allocator_with(&api, "a", &["--unclassed"]);
    api.apply_file(&seeds.join("002-services.yaml"));
    wait(&api, "my-service's address from eno1's pool", |api| api.ingress("my-service") == "192.168.3.150");
    wait(&api, "api-external's address from eno2's pool", |api| api.ingress("api-external") == "192.168.4.150");
    assert_eq!(cond(&api, "api-external", CILIUM), "True satisfied");
    // A Service with no interface label matches neither pool's selector: Cilium's no_pool
    // (no pool selects it), and no address.
    api.apply("apiVersion: v1\nkind: Service\nmetadata: {name: unlabelled}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n");
    wait(&api, "unlabelled's refusal", |api| cond(api, "unlabelled", CILIUM) == "False no_pool");
    assert_eq!(api.ingress("unlabelled"), "");
    let said = |api: &Api| {
        api.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-A",
            "-o",
            r#"jsonpath={range .items[*]}{.type} {.reason} {.regarding.kind}/{.regarding.name}: {.note}{"\n"}{end}"#,
        ])
    };
    // Served (see tests/bgp.rs for the policy on the wire): no NotServed Event, as for
    // Cilium's pools and L2 policies.
    let e = said(&api);
    assert!(
        !e.contains("NotServed CiliumLoadBalancerIPPool")
            && !e.contains("NotServed CiliumL2")
            && !e.contains("NotServed CiliumBGPPeeringPolicy"),
        "{e}"
    );
    let _ = a.kill();
    let _ = a.wait();
}

/// Seed 004's MetalLB pool, unchanged, serves its Service's request with MetalLB's rules;
/// the kinds xlb does not serve yet say so on each object (a Warning Event) rather than
/// being ignored silently.
#[test]
fn metallb_manifests_from_the_seeds() {
    let Some(api) = Api::start() else { return };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    api.apply_crds(&root.join("deploy/crds-metallb.yaml"));
    api.apply_crds(&root.join("tests/fixtures/metallb-bfd-crd-for-tests.yaml"));
    api.kubectl(&["create", "namespace", "metallb-system"]);
    let seeds = root.join("tests/fixtures/seeds");
    api.apply_file(&seeds.join("004-metallb.yaml"));
    let mut a = allocator_with(&api, "a", &["--unclassed"]);
    api.apply_file(&seeds.join("004-service.yaml"));
    api.apply("apiVersion: v1\nkind: Service\nmetadata: {name: auto}\nspec: {type: LoadBalancer, ports: [{port: 53, protocol: UDP}]}\n");
    wait(&api, "nginx-demo-lb's requested address", |api| api.ingress("nginx-demo-lb") == "192.168.1.100");
    wait(&api, "auto's address", |api| api.ingress("auto") == "192.168.1.101");
    assert_eq!(condition(&api, "nginx-demo-lb"), "Allocated");
    // No Cilium kind in this cluster: no Cilium condition.
    assert!(cond(&api, "auto", CILIUM).trim().is_empty());
    // The pool named by MetalLB's annotation; one that does not exist is said.
    api.apply("apiVersion: v1\nkind: Service\nmetadata: {name: named, annotations: {metallb.io/address-pool: production-pool}}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n");
    api.apply("apiVersion: v1\nkind: Service\nmetadata: {name: typo, annotations: {metallb.universe.tf/address-pool: prod}}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n");
    wait(&api, "named's address", |api| api.ingress("named") == "192.168.1.102");
    wait(&api, "typo's failure", |api| condition(api, "typo") == "AllocationFailed");
    assert!(api.events().contains("typo no pool is named prod"), "{}", api.events());
    let said = |api: &Api| {
        api.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "metallb-system",
            "-o",
            r#"jsonpath={range .items[*]}{.type} {.reason} {.regarding.kind}/{.regarding.name}: {.note}{"\n"}{end}"#,
        ])
    };
    wait(&api, "the NotServed Event", |api| {
        said(api).contains("Warning NotServed BFDProfile/production-bfd: xlb does not serve BFDProfile yet")
    });
    let e = said(&api);
    assert!(!e.contains("IPAddressPool") && !e.contains("L2Advertisement"), "{e}");
    let _ = a.kill();
    let _ = a.wait();
}

/// Taking over from a running Cilium or MetalLB allocator: the Services keep the addresses
/// that allocator wrote to their status, in whatever order it gave them, the first address
/// of a CIDR, a disabled pool's and a shared one included; the first new Service gets one
/// nobody holds.
#[test]
fn a_takeover_from_cilium_or_metallb_moves_no_address() {
    let Some(api) = Api::start() else { return };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    api.apply_crds(&root.join("deploy/crds-cilium.yaml"));
    api.apply_crds(&root.join("deploy/crds-metallb.yaml"));
    api.kubectl(&["create", "namespace", "metallb-system"]);
    api.apply("apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: blue}\nspec:\n  blocks: [{cidr: 10.0.10.0/24}]\n---\napiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: draining}\nspec:\n  disabled: true\n  blocks: [{start: 10.0.20.1, stop: 10.0.20.9}]\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: production-pool, namespace: metallb-system}\nspec:\n  addresses: [192.168.1.100-192.168.1.200]\n");
    // What the previous allocators wrote: not lowest first, the CIDR's network address
    // (Cilium 1.16 gives it), a disabled pool's address, one address shared by a key.
    let held = [
        ("seven", "10.0.10.7", ""),
        ("zero", "10.0.10.0", ""),
        ("drained", "10.0.20.4", ""),
        ("dns-tcp", "10.0.10.53", "lbipam.cilium.io/sharing-key: dns"),
        ("dns-udp", "10.0.10.53", "lbipam.cilium.io/sharing-key: dns"),
        ("mlb", "192.168.1.150", "metallb.io/allow-shared-ip: x"),
    ];
    for (i, (name, ip, ann)) in held.iter().enumerate() {
        let proto = if *name == "dns-udp" { "UDP" } else { "TCP" };
        api.apply(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  annotations: {{{ann}}}\nspec:\n  type: LoadBalancer\n  ports: [{{port: {}, protocol: {proto}}}]\n",
            if name.starts_with("dns") { 53 } else { 80 + i }
        ));
        let status = format!(r#"{{"status":{{"loadBalancer":{{"ingress":[{{"ip":"{ip}"}}]}}}}}}"#);
        api.kubectl(&["patch", "svc", name, "--subresource=status", "--type=merge", "-p", &status]);
    }
    let mut a = allocator_with(&api, "a", &["--unclassed"]);
    for (name, ip, _) in held {
        wait(&api, &format!("{name} adopted"), |api| condition(api, name) == "Allocated");
        assert_eq!(api.ingress(name), ip, "{name} moved");
        assert_eq!(cond(&api, name, CILIUM), "True satisfied");
    }
    api.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: new}\nspec: {type: LoadBalancer, ports: [{port: 80}]}\n",
    );
    wait(&api, "new's address", |api| !api.ingress("new").is_empty());
    let new = api.ingress("new");
    assert!(held.iter().all(|(_, ip, _)| *ip != new), "new got {new}, which is held");
    // `xlb migrate` reads the same objects from the cluster, with xlb's own permissions.
    let out = Command::new(env!("CARGO_BIN_EXE_xlb")).args(["migrate", "--kubeconfig", &api.xlb]).output();
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for from in [
        "CiliumLoadBalancerIPPool blue",
        "CiliumLoadBalancerIPPool draining",
        "IPAddressPool metallb-system/production-pool",
    ] {
        assert!(text.contains(&format!("# from {from}\n---\napiVersion: xlb.dev/v1alpha1")), "{from} missing:\n{text}");
    }
    let _ = a.kill();
    let _ = a.wait();
}
