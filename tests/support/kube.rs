//! A REAL Kubernetes API server for the tests (kube-apiserver + etcd built from the Go module
//! proxy by scripts/k8s/apiserver.sh, on loopback), with deploy/crds.yaml and deploy/rbac.yaml
//! applied, so that schema and permission mistakes fail the tests. Under CI=true an API
//! server that cannot be built is a failure, never a skip.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use super::enter_netns_for_tests as enter_netns;

/// A running API server, stopped on drop.
pub struct Api {
    pub dir: PathBuf,
    pub kubectl: PathBuf,
    /// Kubeconfig of the cluster admin.
    pub admin: String,
    /// Kubeconfig of xlb's ServiceAccount (the identity deploy/rbac.yaml grants).
    pub xlb: String,
    /// The API server's port on 127.0.0.1.
    pub port: u16,
}

/// Runs a command, panics with its stderr if it fails, returns its stdout.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/k8s/apiserver.sh")
}

/// The directory of the binaries scripts/k8s/apiserver.sh builds (kubectl, helm, ...), built
/// first if need be; `None` outside CI when they cannot be built.
pub fn binaries() -> Option<PathBuf> {
    let out = Command::new("bash").arg(script()).arg("bin").output().ok().filter(|o| o.status.success());
    let Some(out) = out else {
        assert!(
            std::env::var("CI").is_err(),
            "CI: the Kubernetes binaries could not be built (scripts/k8s/apiserver.sh bin)"
        );
        eprintln!("skipping: the Kubernetes binaries could not be built here");
        return None;
    };
    Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

impl Api {
    /// Builds (cached) and starts the API server, or `None` outside CI when it cannot be built.
    pub fn start() -> Option<Api> {
        binaries()?;
        let dir = std::env::temp_dir().join(format!("xlb-kube-test-{}-{}", std::process::id(), super::next_id()));
        sh(Command::new("bash").arg(script()).arg("start").arg(&dir));
        let env = std::fs::read_to_string(dir.join("env")).unwrap_or_default();
        let get = |k: &str| {
            env.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or_default().trim_matches('"').to_string()
        };
        let url = get("APISERVER_URL");
        let port = url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).unwrap_or(0);
        let api = Api {
            kubectl: PathBuf::from(get("K8S_BIN")).join("kubectl"),
            admin: get("KUBECONFIG_ADMIN"),
            xlb: get("KUBECONFIG_XLB"),
            dir,
            port,
        };
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        api.apply_file(&root.join("deploy/crds.yaml"));
        api.apply_file(&root.join("deploy/rbac.yaml"));
        Some(api)
    }

    /// `kubectl ARGS` as the admin.
    pub fn kubectl(&self, args: &[&str]) -> String {
        sh(Command::new(&self.kubectl).arg("--kubeconfig").arg(&self.admin).args(args))
    }

    pub fn apply_file(&self, f: &Path) {
        self.kubectl(&["apply", "-f", &f.to_string_lossy()]);
    }

    /// Applies a file of CustomResourceDefinitions and waits until the API server serves
    /// them (before that, objects of their kinds are refused) and its discovery lists them
    /// (which lags a little: a client looking then would not find the kinds).
    pub fn apply_crds(&self, f: &Path) {
        let file = f.to_string_lossy();
        self.apply_file(f);
        self.kubectl(&["wait", "--for", "condition=established", "--timeout=30s", "-f", &file]);
        let served = self.kubectl(&[
            "get",
            "-f",
            &file,
            "-o",
            r#"jsonpath={range .items[*]}{.spec.group} {.spec.names.plural} {.spec.versions[*].name}{"\n"}{end}"#,
        ]);
        let t = Instant::now();
        for line in served.lines() {
            let mut words = line.split_whitespace();
            let (Some(group), Some(plural)) = (words.next(), words.next()) else { continue };
            for version in words {
                let listed = |api: &Api| {
                    Command::new(&api.kubectl)
                        .args(["--kubeconfig", &api.admin, "get", "--raw", &format!("/apis/{group}/{version}")])
                        .output()
                        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("\"name\":\"{plural}\"")))
                };
                while !listed(self) {
                    assert!(
                        t.elapsed() < Duration::from_secs(30),
                        "{group}/{version} {plural} not in discovery after 30 s"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// Applies YAML (one or more documents).
    pub fn apply(&self, yaml: &str) {
        let f = self.dir.join(format!("obj-{}.yaml", super::next_id()));
        std::fs::write(&f, yaml).unwrap_or_else(|e| panic!("{e}"));
        self.apply_file(&f);
    }

    /// Waits up to `secs` for `f`; panics naming `what` and showing `log` otherwise.
    pub fn wait_for(&self, what: &str, secs: u64, log: &Path, f: impl Fn(&Api) -> bool) {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(secs) {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let text = std::fs::read_to_string(log).unwrap_or_default();
        panic!("timed out waiting for {what}; {}:\n{text}", log.display());
    }

    /// A Service's addresses, space-separated.
    pub fn ingress(&self, svc: &str) -> String {
        self.kubectl(&["get", "svc", svc, "-o", "jsonpath={.status.loadBalancer.ingress[*].ip}"])
    }

    /// Events in `default`, one line each: reason, object, note.
    pub fn events(&self) -> String {
        self.kubectl(&[
            "get",
            "events.events.k8s.io",
            "-n",
            "default",
            "-o",
            "jsonpath={range .items[*]}{.reason} {.regarding.name} {.note}{\"\\n\"}{end}",
        ])
    }

    /// Stops kube-apiserver (etcd stays).
    pub fn stop_apiserver(&self) {
        sh(Command::new("bash").arg(script()).arg("stop-apiserver").arg(&self.dir));
    }

    /// Starts kube-apiserver again on the same port and data.
    pub fn start_apiserver(&self) {
        sh(Command::new("bash").arg(script()).arg("start-apiserver").arg(&self.dir));
    }

    /// The audit log's writes (create, update, patch, delete) by `user` so far, by
    /// "verb resource".
    pub fn writes_by(&self, user: &str) -> std::collections::BTreeMap<String, u64> {
        let log = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        let mut out = std::collections::BTreeMap::new();
        for e in log.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
            let verb = e["verb"].as_str().unwrap_or_default();
            if e["stage"] == "ResponseComplete"
                && e["user"]["username"] == user
                && matches!(verb, "create" | "update" | "patch" | "delete")
            {
                let what = format!("{verb} {}", e["objectRef"]["resource"].as_str().unwrap_or("?"));
                *out.entry(what).or_insert(0) += 1;
            }
        }
        out
    }

    /// Makes the API server reachable at 127.0.0.1:port inside namespace `ns`: a thread
    /// listens there (its socket made inside `ns`) and relays each connection to the host's
    /// loopback. All traffic stays on loopback interfaces.
    pub fn reach_from(&self, ns: &str) {
        let port = self.port;
        let ns = ns.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let home = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
            enter_netns(&ns).unwrap();
            let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
            // Back home: the relayed connections are made from the host's namespace.
            use std::os::fd::AsRawFd as _;
            // SAFETY: setns with a descriptor we hold open and a valid flag.
            assert_eq!(unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            tx.send(()).unwrap();
            for conn in listener.incoming() {
                let Ok(down) = conn else { continue };
                let Ok(up) = TcpStream::connect(("127.0.0.1", port)) else { continue };
                relay(down, up);
            }
        });
        rx.recv().unwrap();
    }
}

fn relay(a: TcpStream, b: TcpStream) {
    for (mut from, mut to) in [(a.try_clone().unwrap(), b.try_clone().unwrap()), (b, a)] {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
