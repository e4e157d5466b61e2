//! The Helm chart (deploy/helm/xlb) and the files derived from it, checked with the real
//! tools: `helm lint` and `helm template` (values.schema.json refusing bad values), the
//! rendered objects applied to a REAL kube-apiserver + etcd (scripts/k8s/apiserver.sh, as in
//! tests/kube.rs) so that schema mistakes fail here, and the RBAC the chart grants checked
//! with `kubectl auth can-i` as the xlb ServiceAccount: what xlb does, and nothing broader.
//! Under CI=true a missing API server is a failure, never a skip (tests/support/kube.rs).

mod support;

use std::{collections::BTreeSet, path::Path, process::Command};

use serde_json::Value;
use support::kube::{sh, Api};
use xlb::{
    io::worker::DEFAULT_FRAMES,
    lb::{conntrack::MAX_CAPACITY, snat::DEFAULT_PORTS},
    memory::{Memory, Sizes},
};

const NS: &str = "xlb-system";
/// The capabilities the DaemonSet adds (after dropping ALL), and no others.
const CAPS: [&str; 4] = ["NET_ADMIN", "NET_RAW", "BPF", "IPC_LOCK"];
/// And those FRR needs too, with `bgp.enabled` (deploy/README.md says how each was measured).
const BGP_CAPS: [&str; 6] = ["SYS_ADMIN", "SETUID", "SETGID", "NET_BIND_SERVICE", "CHOWN", "DAC_OVERRIDE"];
const CHART: &str = "deploy/helm/xlb";

/// Every optional part of the chart on.
const ALL_VALUES: &str = r#"interface: eth0
serveUnclassed: true
queues: 4
logFormat: json
serviceMonitor: {enabled: true, labels: {release: prometheus}}
grafanaDashboard: {enabled: true, annotations: {grafana_folder: xlb}}
l2Policy: {interfaces: ["^eth[0-9]+$"], externalIPs: true, announce: {gratuitousArpMs: [0, 20, 100, 500], refreshSeconds: 10}}
failover: {keySecret: xlb-heartbeat}
bgp:
  enabled: true
  peers: [{name: tor-a, spec: {localASN: 64512, peerAddress: 10.0.0.1, peerASN: 64500, bfdProfile: fast, passwordSecretRef: {name: tor-a}, nodeSelector: {matchLabels: {rack: a}}}}]
  bfdProfiles: [{name: fast, spec: {receiveInterval: 100, transmitInterval: 100, detectMultiplier: 3}}]
  advertisements: [{name: public, spec: {pools: [public], communities: ["65000:100"], peers: [tor-a], aggregationLength: 28}}]
  nodeOverrides: [{name: lb-1, spec: {routerID: 10.0.0.21}}]
pools:
  - name: public
    blocks: [{cidr: 192.0.2.0/28}, {start: 198.51.100.10, stop: 198.51.100.20}]
    allowFirstLastIPs: "Yes"
    disabled: false
    serviceSelector: {matchLabels: {exposed: public}, matchExpressions: [{key: tier, operator: In, values: [web]}]}
  - name: v6
    blocks: [{cidr: "2001:db8:1::/120"}]
nodeSelector: {node-role.kubernetes.io/ingress: ""}
tolerations: [{key: dedicated, operator: Equal, value: ingress, effect: NoSchedule}]
priorityClassName: system-node-critical
imagePullSecrets: [{name: regcred}]
conntrack: {capacity: 262144, timeouts: {tcpSynSnat: 3, udp: 30}}
memory: {queues: 8, snatAddresses: 2, headroomMiB: 128}
extraArgs: [--xdp-mode, native]
extraEnv: [{name: RUST_LOG, value: debug}]
podAnnotations: {example.com/a: b}
podLabels: {team: net}
ciliumCRDs: true
metallbCRDs: true
"#;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Runs a command in the repository root: (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.current_dir(root()).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn xlb(args: &[&str]) -> String {
    sh(Command::new(env!("CARGO_BIN_EXE_xlb")).args(args))
}

/// The documents of a multi-document YAML stream (empty ones left out).
fn docs(yaml: &str) -> Vec<Value> {
    let all: Vec<Value> = serde_saphyr::from_multiple(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    all.into_iter().filter(|d| !d.is_null()).collect()
}

fn kinds(objs: &[Value]) -> BTreeSet<String> {
    objs.iter().map(|o| str_at(o, "/kind").to_string()).collect()
}

fn the<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    let mut of_kind = objs.iter().filter(|o| o["kind"] == kind);
    let one = of_kind.next().unwrap_or_else(|| panic!("no {kind} in the render"));
    assert!(of_kind.next().is_none(), "more than one {kind} in the render");
    one
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_else(|| panic!("no string at {ptr} in {v:#}"))
}

fn strings(v: &Value, ptr: &str) -> Vec<String> {
    let arr = v.pointer(ptr).and_then(Value::as_array).unwrap_or_else(|| panic!("no list at {ptr} in {v:#}"));
    arr.iter().map(|s| s.as_str().unwrap_or_else(|| panic!("{ptr}: {s} is not a string")).to_string()).collect()
}

/// Whether `args` has `flag` immediately followed by `value`.
fn has_pair(args: &[String], flag: &str, value: &str) -> bool {
    args.windows(2).any(|w| w[0] == flag && w[1] == value)
}

/// What must hold in every render of the DaemonSet (`bgp`: with `bgp.enabled`); returns its
/// container's args.
fn check_daemonset(ds: &Value, bgp: bool) -> Vec<String> {
    let pod = ds.pointer("/spec/template/spec").unwrap_or_else(|| panic!("no pod spec: {ds:#}"));
    assert_eq!(pod["hostNetwork"], true, "hostNetwork");
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["serviceAccountName"], "xlb");
    assert_eq!(pod["terminationGracePeriodSeconds"], 10);
    assert_eq!(str_at(ds, "/spec/updateStrategy/type"), "RollingUpdate");
    // An upgrade surges: the new pod's xlb takes over from the old one (--takeover), which
    // needs the pod to declare no host port, and a readiness of its own.
    assert_eq!(ds.pointer("/spec/updateStrategy/rollingUpdate/maxSurge"), Some(&Value::from(1)));
    assert_eq!(ds.pointer("/spec/updateStrategy/rollingUpdate/maxUnavailable"), Some(&Value::from(0)));
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false, "privileged: {sc:#}");
    assert_eq!(sc["allowPrivilegeEscalation"], false, "allowPrivilegeEscalation: {sc:#}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "readOnlyRootFilesystem: {sc:#}");
    assert_eq!(strings(sc, "/capabilities/drop"), ["ALL"], "capabilities dropped");
    let added: BTreeSet<String> = strings(sc, "/capabilities/add").into_iter().collect();
    let want = CAPS.iter().chain(if bgp { &BGP_CAPS[..] } else { &[] });
    assert_eq!(added, want.map(|s| s.to_string()).collect(), "capabilities added");
    let env: Vec<(&str, &str)> = c["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e["name"].as_str()?, e.pointer("/valueFrom/fieldRef/fieldPath")?.as_str()?)))
        .collect();
    assert!(env.contains(&("NODE_NAME", "spec.nodeName")), "NODE_NAME: {env:?}");
    assert!(env.contains(&("POD_NAMESPACE", "metadata.namespace")), "POD_NAMESPACE: {env:?}");
    // Liveness asks for the one path the metrics server serves; readiness asks this pod's
    // own xlb (the node's metrics port may be the old pod's in an upgrade).
    assert_eq!(str_at(c, "/livenessProbe/httpGet/path"), "/metrics");
    assert_eq!(c.pointer("/livenessProbe/httpGet/port"), Some(&Value::from(9180)));
    assert_eq!(strings(c, "/readinessProbe/exec/command"), ["/usr/local/bin/xlb", "status"]);
    assert!(c.get("ports").is_none(), "a declared port is a host port, which blocks maxSurge: {c:#}");
    // The admin socket's directory (config::DEFAULT_ADMIN_SOCKET) is writable.
    assert_eq!(str_at(c, "/volumeMounts/0/mountPath"), "/run/xlb");
    assert!(pod.pointer("/volumes/0/emptyDir").is_some(), "/run/xlb is an emptyDir: {pod:#}");
    // The tables live on the node (daemon::DEFAULT_STATE_DIR), for the next pod to take over.
    assert_eq!(str_at(c, "/volumeMounts/1/mountPath"), "/run/xlb/state");
    assert_eq!(str_at(pod, "/volumes/1/hostPath/path"), "/run/xlb/state");
    assert_eq!(str_at(pod, "/volumes/1/hostPath/type"), "DirectoryOrCreate");
    let args = strings(c, "/args");
    let run = args.iter().position(|a| a == "run").unwrap_or_else(|| panic!("no `run` in {args:?}"));
    let after = &args[run..];
    assert!(after.contains(&"--kubernetes".to_string()), "{args:?}");
    assert!(has_pair(after, "--interface", "eth0"), "{args:?}");
    assert!(has_pair(after, "--metrics-listen", "0.0.0.0:9180"), "{args:?}");
    assert!(has_pair(after, "--class", "xlb.dev/xlb"), "{args:?}");
    assert!(after.contains(&"--takeover".to_string()), "{args:?}");
    args
}

/// `helm ARGS`, the helm built next to the API server's kubectl, run in the repository root.
fn helm(api: &Api, args: &[&str]) -> Command {
    let mut c = Command::new(api.kubectl.with_file_name("helm"));
    c.current_dir(root()).args(args);
    c
}

/// `helm template` of the chart as the xlb-system release `xlb`, for this API server.
fn template(api: &Api, args: &[&str]) -> Command {
    let mut c = helm(api, &["template", "xlb", CHART, "--namespace", NS, "--kube-version", "1.35.4"]);
    c.args(args);
    c
}

/// Writes `text` to the API server's directory; the file's path.
fn file(api: &Api, name: &str, text: &str) -> String {
    let f = api.dir.join(name);
    std::fs::write(&f, text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    f.to_string_lossy().into_owned()
}

/// `kubectl auth can-i ARGS` as the xlb ServiceAccount.
fn xlb_can(api: &Api, args: &str) -> bool {
    let mut cmd = Command::new(&api.kubectl);
    cmd.arg("--kubeconfig").arg(&api.xlb).args(["auth", "can-i"]).args(args.split_whitespace());
    let (_, out, err) = run(&mut cmd);
    match out.trim() {
        "yes" => true,
        "no" => false,
        other => panic!("{cmd:?}: no answer ({other}):\n{err}"),
    }
}

/// The prometheus-operator ServiceMonitor CRD (scripts/k8s/servicemonitor-crd.sh), if it can
/// be had; under CI=true it must.
fn servicemonitor_crd() -> Option<String> {
    let (ok, out, err) = run(Command::new("bash").arg("scripts/k8s/servicemonitor-crd.sh"));
    if ok {
        return Some(out.trim().to_string());
    }
    assert!(std::env::var("CI").is_err(), "CI: the ServiceMonitor CRD could not be fetched:\n{err}");
    eprintln!("the ServiceMonitor CRD could not be fetched; the ServiceMonitor is not applied:\n{err}");
    None
}

#[test]
fn derived_files_are_in_sync() {
    let fix = "(run deploy/generate.sh)";
    let crds = read("deploy/crds.yaml");
    assert!(crds == xlb(&["crds"]), "deploy/crds.yaml differs from `xlb crds` {fix}");
    assert!(
        crds == read(&format!("{CHART}/crds/crds.yaml")),
        "{CHART}/crds/crds.yaml differs from deploy/crds.yaml {fix}"
    );
    let cilium = read("deploy/crds-cilium.yaml");
    assert!(cilium == xlb(&["crds", "--cilium"]), "deploy/crds-cilium.yaml differs from `xlb crds --cilium` {fix}");
    assert!(
        cilium == read(&format!("{CHART}/files/crds-cilium.yaml")),
        "{CHART}/files/crds-cilium.yaml differs from deploy/crds-cilium.yaml {fix}"
    );
    let metallb = read("deploy/crds-metallb.yaml");
    assert!(metallb == xlb(&["crds", "--metallb"]), "deploy/crds-metallb.yaml differs from `xlb crds --metallb` {fix}");
    assert!(
        metallb == read(&format!("{CHART}/files/crds-metallb.yaml")),
        "{CHART}/files/crds-metallb.yaml differs from deploy/crds-metallb.yaml {fix}"
    );
    let dashboard = read("deploy/grafana/xlb-dashboard.json");
    assert!(
        dashboard == read(&format!("{CHART}/files/xlb-dashboard.json")),
        "{CHART}/files/xlb-dashboard.json differs from deploy/grafana/xlb-dashboard.json {fix}"
    );
    let chart = read(&format!("{CHART}/Chart.yaml"));
    let app_version = chart.lines().find_map(|l| l.strip_prefix("appVersion:")).map(|v| v.trim().trim_matches('"'));
    assert_eq!(app_version, Some(env!("CARGO_PKG_VERSION")), "Chart.yaml appVersion is Cargo.toml's version");

    // The dashboard shows only what xlb exports: every metric it names is registered in
    // src/metrics.rs (under its name less the prefix and the _total/_bucket/unit suffixes),
    // and every drop reason it names is one of src/lb/stats.rs.
    let json: Value = serde_json::from_str(&dashboard).unwrap_or_else(|e| panic!("the dashboard: {e}"));
    let exprs: Vec<&str> = json["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() > 20, "the dashboard has {} queries", exprs.len());
    let metrics_rs = read("src/metrics.rs");
    let stats_rs = read("src/lb/stats.rs");
    for expr in &exprs {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            let Some(name) = word.strip_prefix("xlb_") else { continue };
            let base = ["_total", "_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
            let unitless = ["_seconds", "_bytes"].iter().fold(base, |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(
                metrics_rs.contains(&format!("\"{base}\"")) || metrics_rs.contains(&format!("\"{unitless}\",")),
                "the dashboard's {word} is not a metric of src/metrics.rs ({expr})"
            );
        }
        if let Some(reasons) = expr.split("reason=~\"").nth(1).and_then(|r| r.split('"').next()) {
            for r in reasons.split('|') {
                assert!(
                    stats_rs.contains(&format!("=> \"{r}\"")),
                    "the dashboard's drop reason {r} is not one of xlb's"
                );
            }
        }
    }
}

/// Every flag the DaemonSet passes is one that `xlb run` takes.
#[test]
fn daemonset_flags_are_flags_of_xlb_run() {
    let template = read(&format!("{CHART}/templates/daemonset.yaml"));
    let flags: Vec<&str> = template
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- --"))
        .map(|f| f.split_whitespace().next().unwrap_or(f))
        .collect();
    assert!(flags.len() >= 6, "flags found in the template: {flags:?}");
    let help = xlb(&["run", "--help"]);
    for f in flags {
        assert!(
            help.contains(&format!("--{f} ")) || help.contains(&format!("--{f}\n")),
            "`xlb run` has no --{f}:\n{help}"
        );
    }
}

/// The memory the DaemonSet requests is what xlb prints at start and checks before it
/// allocates (xlb::memory), for the flow table's capacity, the queues (`queues`, else
/// `memory.queues`) and the SNAT addresses counted; the limit is the request plus
/// `memory.headroomMiB`; what the user sets in `resources` stays.
#[test]
fn memory_request_is_what_xlb_computes() {
    let Some(bin) = support::kube::binaries() else { return };
    // `helm template` of the DaemonSet with `--set` of each of `set` (`--set-string` of
    // `strings`).
    let render_strings = |set: &[String], strings: &[&str]| -> Result<Value, String> {
        let mut cmd = Command::new(bin.join("helm"));
        cmd.args(["template", "xlb", CHART, "--namespace", NS, "--show-only", "templates/daemonset.yaml"]);
        cmd.args(["--set", "interface=eth0"]);
        for s in set {
            cmd.args(["--set", s]);
        }
        for s in strings {
            cmd.args(["--set-string", s]);
        }
        let (ok, out, err) = run(&mut cmd);
        if ok {
            Ok(docs(&out).remove(0))
        } else {
            Err(err)
        }
    };
    let render = |set: &[String]| render_strings(set, &[]);
    let memory = |ds: &Value, which: &str| {
        ds.pointer(&format!("/spec/template/spec/containers/0/resources/{which}/memory"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    // (conntrack.capacity, queues, memory.queues, memory.snatAddresses); None: the default.
    let cases = [
        (1usize << 20, None::<u32>, None::<u32>, None::<usize>),
        (1 << 20, Some(2), None, Some(0)),
        (262_144, Some(1), None, Some(0)),
        (262_144, None, Some(16), Some(1)),
        (1, Some(7), Some(3), Some(2)),
        (16, Some(64), None, Some(3)),
        (1_000_000, Some(12), None, Some(255)),
        (MAX_CAPACITY, Some(1), None, Some(1)),
    ];
    for (capacity, queues, counted, snat) in cases {
        let mut set = vec![format!("conntrack.capacity={capacity}")];
        set.extend(queues.map(|q| format!("queues={q}")));
        set.extend(counted.map(|q| format!("memory.queues={q}")));
        set.extend(snat.map(|n| format!("memory.snatAddresses={n}")));
        let ds = render(&set).unwrap_or_else(|e| panic!("{set:?}: {e}"));
        // The chart's defaults: 4 queues counted, one SNAT address, 256 MiB of headroom.
        let sizes = Sizes {
            queues: queues.or(counted).unwrap_or(4),
            conntrack_capacity: capacity,
            frames: DEFAULT_FRAMES,
            snat_addrs: snat.unwrap_or(1),
            snat_ports: DEFAULT_PORTS,
        };
        let want = Memory::new(sizes).total_mib();
        assert_eq!(memory(&ds, "requests"), Some(format!("{want}Mi")), "{set:?}: xlb prints {}", Memory::new(sizes));
        assert_eq!(memory(&ds, "limits"), Some(format!("{}Mi", want + 256)), "{set:?}");
        let args = strings(&ds, "/spec/template/spec/containers/0/args");
        assert!(has_pair(&args, "--conntrack-capacity", &capacity.to_string()), "{set:?}: {args:?}");
    }
    // The defaults: 4 queues of 141 MiB, one SNAT address (12 MiB) and the base (27 MiB), as
    // values.yaml says.
    let ds = render(&[]).unwrap();
    assert_eq!(memory(&ds, "requests").as_deref(), Some("603Mi"));
    assert_eq!(memory(&ds, "limits").as_deref(), Some("859Mi"));
    // What the user sets stays: a request of theirs leaves the limit to them.
    let ds = render(&["resources.requests.memory=1Gi".into()]).unwrap();
    assert_eq!((memory(&ds, "requests").as_deref(), memory(&ds, "limits")), (Some("1Gi"), None));
    let ds = render(&["resources.limits.memory=4Gi".into(), "memory.headroomMiB=0".into()]).unwrap();
    assert_eq!((memory(&ds, "requests").as_deref(), memory(&ds, "limits").as_deref()), (Some("603Mi"), Some("4Gi")));
    let ds = render(&["memory.headroomMiB=0".into()]).unwrap();
    assert_eq!(memory(&ds, "limits").as_deref(), Some("603Mi"));
    // The capacity is a value, so that the request follows it: not a flag among extraArgs.
    let e = render_strings(&[], &["extraArgs={--conntrack-capacity,262144}"]).unwrap_err();
    assert!(e.contains("give --conntrack-capacity as conntrack.capacity"), "{e}");
    let e = render(&["conntrack.capacity=0".into()]).unwrap_err();
    assert!(e.contains("schema") && e.contains("/conntrack/capacity"), "{e}");
}

#[test]
fn chart_against_a_real_api_server() {
    // With deploy/crds.yaml and deploy/rbac.yaml applied (the Namespace xlb-system and the
    // RBAC that the chart renders, as checked below).
    let Some(api) = Api::start() else { return };

    let lint = sh(&mut helm(&api, &["lint", "--strict", CHART, "--set", "interface=eth0"]));
    assert!(lint.contains("0 chart(s) failed"), "helm lint:\n{lint}");

    // Default values: the DaemonSet, RBAC and the default L2AnnouncementPolicy only.
    let default_yaml = sh(&mut template(&api, &["--set", "interface=eth0"]));
    let default = docs(&default_yaml);
    let want: BTreeSet<String> = [
        "ClusterRole",
        "ClusterRoleBinding",
        "DaemonSet",
        "L2AnnouncementPolicy",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    .map(String::from)
    .into();
    assert_eq!(kinds(&default), want, "kinds rendered with the default values");
    let args = check_daemonset(the(&default, "DaemonSet"), false);
    for absent in ["--unclassed", "--snat-addr", "--queues", "--log-format"] {
        assert!(!args.iter().any(|a| a == absent), "default args have {absent}: {args:?}");
    }
    let policy = the(&default, "L2AnnouncementPolicy");
    assert_eq!(policy.pointer("/spec/loadBalancerIPs"), Some(&Value::Bool(true)), "{policy:#}");

    // Every optional part on.
    let values = file(&api, "all-values.yaml", ALL_VALUES);
    let full_yaml = sh(&mut template(&api, &["-f", &values]));
    let full = docs(&full_yaml);
    let found = kinds(&full);
    for k in [
        "ServiceMonitor",
        "Service",
        "ConfigMap",
        "LoadBalancerIPPool",
        "CustomResourceDefinition",
        "BGPPeer",
        "BFDProfile",
        "BGPAdvertisement",
        "BGPNodeOverride",
    ] {
        assert!(found.contains(k), "no {k} with every option on: {found:?}");
    }
    let crds: BTreeSet<&str> = full
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .filter_map(|o| o.pointer("/metadata/name").and_then(Value::as_str))
        .collect();
    let want_crds = [
        "ciliuml2announcementpolicies.cilium.io",
        "ciliumloadbalancerippools.cilium.io",
        "ipaddresspools.metallb.io",
        "l2advertisements.metallb.io",
    ];
    assert_eq!(crds, want_crds.into(), "ciliumCRDs and metallbCRDs install those kinds' definitions");
    let args = check_daemonset(the(&full, "DaemonSet"), true);
    assert!(args.contains(&"--unclassed".to_string()), "{args:?}");
    assert!(has_pair(&args, "--queues", "4"), "{args:?}");
    assert!(has_pair(&args, "--log-format", "json"), "{args:?}");
    assert!(has_pair(&args, "--conntrack-timeout", "tcpSynSnat=3"), "{args:?}");
    assert!(has_pair(&args, "--conntrack-timeout", "udp=30"), "{args:?}");
    assert_eq!(str_at(the(&full, "Service"), "/spec/clusterIP"), "None", "the metrics Service is headless");
    let cm = the(&full, "ConfigMap");
    assert_eq!(str_at(cm, "/metadata/labels/grafana_dashboard"), "1");
    assert!(
        str_at(cm, "/data/xlb-dashboard.json") == read("deploy/grafana/xlb-dashboard.json").trim_end(),
        "the ConfigMap carries the dashboard"
    );
    let pools = full.iter().filter(|o| o["kind"] == "LoadBalancerIPPool").count();
    assert_eq!(pools, 2, "one LoadBalancerIPPool per entry of pools");

    // Bad values: refused by values.schema.json, naming the field.
    let bare_yes =
        file(&api, "bare-yes.yaml", "pools: [{name: p, blocks: [{cidr: 192.0.2.0/28}], allowFirstLastIPs: Yes}]\n");
    for (what, set, needle) in [
        ("a missing interface", &[][..], "interface"),
        ("an unknown top-level key", &["--set", "interface=eth0", "--set", "bogus=1"][..], "'bogus'"),
        ("an unknown nested key", &["--set", "interface=eth0", "--set", "serviceMonitor.enbled=true"][..], "'enbled'"),
        ("a string port", &["--set", "interface=eth0", "--set-string", "metrics.port=9180"][..], "/metrics/port"),
        (
            "an unknown timeout",
            &["--set", "interface=eth0", "--set", "conntrack.timeouts.tcpSynSent=5"][..],
            "'tcpSynSent'",
        ),
        ("a bare Yes (a boolean)", &["--set", "interface=eth0", "-f", &bare_yes][..], "/pools/0/allowFirstLastIPs"),
    ] {
        let mut cmd = template(&api, set);
        let (ok, _, err) = run(&mut cmd);
        assert!(!ok, "{what} was accepted: {cmd:?}");
        assert!(err.contains("schema") && err.contains(needle), "{what}: {cmd:?} does not name {needle}:\n{err}");
    }
    // BGP objects without FRR's capabilities: refused, saying what to set.
    let peers = file(
        &api,
        "bgp-off.yaml",
        "bgp: {peers: [{name: r, spec: {localASN: 64512, peerAddress: 10.0.0.1, peerASN: 64500}}]}\n",
    );
    let (ok, _, err) = run(&mut template(&api, &["--set", "interface=eth0", "-f", &peers]));
    assert!(!ok && err.contains("set bgp.enabled: true"), "BGP peers without bgp.enabled:\n{err}");

    // deploy/rbac.yaml is the Namespace + the chart's RBAC for xlb-system (comments aside).
    let rbac = sh(&mut template(&api, &["--set", "interface=eth0", "--show-only", "templates/rbac.yaml"]));
    let uncommented = |s: &str| s.lines().filter(|l| !l.starts_with('#')).map(|l| format!("{l}\n")).collect::<String>();
    let namespace = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n");
    assert!(
        uncommented(&read("deploy/rbac.yaml")) == namespace + &uncommented(&rbac),
        "deploy/rbac.yaml is not the chart's templates/rbac.yaml rendered for {NS} (run deploy/generate.sh)"
    );

    // The API server accepts every object (server-side dry run: its schemas, CRDs included).
    let servicemonitor = servicemonitor_crd();
    if let Some(crd) = &servicemonitor {
        api.kubectl(&["apply", "--server-side", "-f", crd]);
    }
    api.kubectl(&["wait", "--for=condition=Established", "--timeout=30s", "crd", "--all"]);
    let full_objs: String = if servicemonitor.is_some() {
        full_yaml
    } else {
        full_yaml
            .split("\n---\n")
            .filter(|d| !d.contains("\nkind: ServiceMonitor\n"))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let full_file = file(&api, "full.yaml", &full_objs);
    let dry = api.kubectl(&["apply", "--server-side", "--dry-run=server", "-f", &full_file]);
    assert!(
        dry.contains("servicemonitor") || servicemonitor.is_none(),
        "the dry run skipped the ServiceMonitor:\n{dry}"
    );

    // Then for real with the default values: RBAC (the same objects again), DaemonSet, policy.
    let default_file = file(&api, "default.yaml", &default_yaml);
    api.kubectl(&["apply", "--server-side", "-f", &default_file]);
    let caps = api.kubectl(&[
        "get",
        "ds",
        "xlb",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].securityContext.capabilities.add}",
    ]);
    assert_eq!(caps, r#"["NET_ADMIN","NET_RAW","BPF","IPC_LOCK"]"#, "the stored DaemonSet's capabilities");

    // What xlb does, as the ServiceAccount the chart binds (deploy/rbac.yaml, equal to the
    // chart's RBAC, was applied first: these checks hold for both)...
    for yes in [
        "list services",
        "watch services",
        "list nodes",
        "watch nodes",
        "list endpointslices.discovery.k8s.io",
        "watch endpointslices.discovery.k8s.io",
        "list loadbalancerippools.xlb.dev",
        "watch loadbalancerippools.xlb.dev",
        "list l2announcementpolicies.xlb.dev",
        "watch l2announcementpolicies.xlb.dev",
        "patch services --subresource=status -n default",
        "patch loadbalancerippools.xlb.dev --subresource=status",
        "create events.events.k8s.io -n default",
        "create leases.coordination.k8s.io -n xlb-system",
        "update leases.coordination.k8s.io -n xlb-system",
        "watch bgppeers.xlb.dev",
        "watch bgpadvertisements.xlb.dev",
        "watch bfdprofiles.xlb.dev",
        "watch bgpnodeoverrides.xlb.dev",
        "patch bgppeers.xlb.dev --subresource=status",
        // BGPPeers' passwords: Secrets of xlb's own namespace only.
        "watch secrets -n xlb-system",
    ] {
        assert!(xlb_can(&api, yes), "the xlb ServiceAccount cannot: {yes}");
    }
    // ... and nothing broader.
    for no in [
        "delete services -n default",
        "patch services -n default",
        "get secrets -n default",
        "list secrets --all-namespaces",
        "update bgppeers.xlb.dev",
        "create bgpadvertisements.xlb.dev",
        "update leases.coordination.k8s.io -n default",
        "create pods -n xlb-system",
        "update loadbalancerippools.xlb.dev",
        "create l2announcementpolicies.xlb.dev",
        "* *",
    ] {
        assert!(!xlb_can(&api, no), "the xlb ServiceAccount can: {no}");
    }
}
