//! The allocator against a REAL Kubernetes API server (kube-apiserver + etcd built from the
//! Go module proxy by scripts/k8s/apiserver.sh, on loopback), running under the RBAC
//! identity that deploy/rbac.yaml grants, so that schema and permission mistakes fail here.
//! Under CI=true a missing API server is a failure, never a skip.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

struct Api {
    dir: PathBuf,
    kubectl: PathBuf,
    admin: String,
    xlb: String,
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Api {
    fn start() -> Option<Api> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = root.join("scripts/k8s/apiserver.sh");
        let built = Command::new("bash").arg(&script).arg("build").status().is_ok_and(|s| s.success());
        if !built {
            assert!(
                std::env::var("CI").is_err(),
                "CI: the API server could not be built (scripts/k8s/apiserver.sh build)"
            );
            eprintln!("skipping: the API server could not be built here");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("xlb-kube-test-{}", std::process::id()));
        sh(Command::new("bash").arg(&script).arg("start").arg(&dir));
        let env = std::fs::read_to_string(dir.join("env")).unwrap_or_default();
        let get = |k: &str| {
            env.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or_default().trim_matches('"').to_string()
        };
        let api = Api {
            kubectl: PathBuf::from(get("K8S_BIN")).join("kubectl"),
            admin: get("KUBECONFIG_ADMIN"),
            xlb: get("KUBECONFIG_XLB"),
            dir,
        };
        api.apply_file(&root.join("deploy/crds.yaml"));
        api.apply_file(&root.join("deploy/rbac.yaml"));
        Some(api)
    }

    fn kubectl(&self, args: &[&str]) -> String {
        sh(Command::new(&self.kubectl).arg("--kubeconfig").arg(&self.admin).args(args))
    }

    fn apply_file(&self, f: &Path) {
        self.kubectl(&["apply", "-f", &f.to_string_lossy()]);
    }

    fn apply(&self, yaml: &str) {
        let f = self.dir.join("obj.yaml");
        std::fs::write(&f, yaml).unwrap_or_else(|e| panic!("{e}"));
        self.apply_file(&f);
    }

    /// Runs `xlb allocator` as the xlb ServiceAccount.
    fn allocator(&self, identity: &str) -> Child {
        Command::new(env!("CARGO_BIN_EXE_xlb"))
            .args(["allocator", "--kubeconfig", &self.xlb, "--identity", identity, "--lease-seconds", "4"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join(format!("{identity}.log"))).map_or(Stdio::null(), Stdio::from))
            .spawn()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn wait(&self, what: &str, f: impl Fn(&Api) -> bool) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.join("a.log")).unwrap_or_default();
        panic!("timed out waiting for {what}; allocator log:\n{log}");
    }

    fn ingress(&self, svc: &str) -> String {
        self.kubectl(&["get", "svc", svc, "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"])
    }

    /// Events in `default`, one line each: reason, object, note.
    fn events(&self) -> String {
        self.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "default",
            "-o",
            "jsonpath={range .items[*]}{.reason} {.regarding.name} {.note}{\"\\n\"}{end}",
        ])
    }

    fn condition(&self, svc: &str) -> String {
        self.kubectl(&[
            "get",
            "svc",
            svc,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="xlb.dev/IPAllocated")].reason}"#,
        ])
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let _ = Command::new("bash").arg(root.join("scripts/k8s/apiserver.sh")).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
    let mut a = api.allocator("a");
    // A pool + a Service + its EndpointSlice: an address in the status, and an Event.
    api.apply(&service("web", 80, ""));
    api.apply("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: web-1\n  namespace: default\n  labels: {kubernetes.io/service-name: web}\naddressType: IPv4\nports: [{name: '', port: 8080, protocol: TCP}]\nendpoints: [{addresses: [10.0.0.5], conditions: {ready: true}}]\n");
    api.wait("web's address", |api| api.ingress("web") == "192.0.2.1");
    assert_eq!(api.condition("web"), "Allocated");
    api.wait("the IPAllocated Event", |api| api.events().contains("IPAllocated web allocated 192.0.2.1"));
    // A request for a taken address: pending, with IPAllocationFailed.
    api.apply(&service("thief", 81, "lbipam.cilium.io/ips: 192.0.2.1"));
    api.wait("thief's failure", |api| api.condition("thief") == "AllocationFailed");
    assert_eq!(api.ingress("thief"), "");
    let events = api.events();
    assert!(events.contains("IPAllocationFailed thief 192.0.2.1 is already assigned"), "{events}");
    // A sharing key with distinct ports shares; a clashing port does not.
    api.apply(&service("dns", 53, "lbipam.cilium.io/sharing-key: k"));
    api.apply(&service("dot", 853, "metallb.universe.tf/allow-shared-ip: k"));
    api.apply(&service("dns2", 53, "lbipam.cilium.io/sharing-key: k"));
    api.wait("shared address", |api| !api.ingress("dns").is_empty() && api.ingress("dns") == api.ingress("dot"));
    api.wait("dns2's clash", |api| api.condition("dns2") == "AllocationFailed");
    // Deleting web frees its address: the thief gets it.
    api.kubectl(&["delete", "svc", "web"]);
    api.wait("thief's address", |api| api.ingress("thief") == "192.0.2.1");
    // Pool status: counts.
    api.wait("pool counts", |api| {
        api.kubectl(&["get", "lbpool", "public", "-o", "jsonpath={.status.counts.used}/{.status.counts.total}"])
            == "2/14"
    });
    // Restarting the allocator changes no address (a new one adopts the statuses).
    let before: Vec<String> = ["thief", "dns", "dot"].iter().map(|s| api.ingress(s)).collect();
    let _ = Command::new("kill").arg("-TERM").arg(a.id().to_string()).status();
    let _ = a.wait();
    api.apply(&service("late", 90, ""));
    let mut b = api.allocator("b");
    api.wait("late's address", |api| !api.ingress("late").is_empty());
    let after: Vec<String> = ["thief", "dns", "dot"].iter().map(|s| api.ingress(s)).collect();
    assert_eq!(before, after, "a restart moved an address");
    assert!(!before.contains(&api.ingress("late")), "late got an address already held");
    let _ = b.kill();
    let _ = b.wait();
}
