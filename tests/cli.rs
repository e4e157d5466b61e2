//! What a user sees for bad input: one line naming the mistake, and exit code 2. Needs no
//! root: xlb checks its arguments and the interface before it touches BPF.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: a panic is the report

use std::process::Command;

fn xlb(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xlb")).args(args).output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn one_line_naming(stderr: &str, needle: &str) {
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr:?}");
    assert!(lines[0].contains(needle), "{needle:?} not named in: {stderr:?}");
}

#[test]
fn unknown_interface_is_named_with_exit_2() {
    let (code, err) = xlb(&["run", "--interface", "nosuchif0", "--vip", "192.0.2.10"]);
    assert_eq!(code, Some(2), "{err}");
    one_line_naming(&err, "nosuchif0");
    assert!(err.contains("ip link"), "the fix is suggested: {err}");
}

#[test]
fn unparseable_vip_is_named_with_exit_2() {
    for bad in ["10.0.0.300", "fd00::zz", "vip"] {
        let (code, err) = xlb(&["run", "--interface", "lo", "--vip", bad]);
        assert_eq!(code, Some(2), "{err}");
        one_line_naming(&err, bad);
    }
}

#[test]
fn unusable_vips_are_refused_with_exit_2() {
    for (bad, why) in [("224.0.0.5", "multicast"), ("0.0.0.0", "unspecified"), ("::1", "loopback")] {
        let (code, err) = xlb(&["run", "--interface", "lo", "--vip", bad]);
        assert_eq!(code, Some(2), "{err}");
        one_line_naming(&err, why);
    }
    let (code, err) = xlb(&["run", "--interface", "lo", "--vip", "192.0.2.1", "--vip", "192.0.2.1"]);
    assert_eq!(code, Some(2), "{err}");
    one_line_naming(&err, "twice");
}

#[test]
fn missing_and_unknown_arguments_exit_2_in_one_line() {
    let (code, err) = xlb(&["run", "--interface", "lo"]);
    assert_eq!(code, Some(2), "{err}");
    one_line_naming(&err, "--vip");
    let (code, err) = xlb(&["run", "--interface", "lo", "--vip", "192.0.2.1", "--frobnicate"]);
    assert_eq!(code, Some(2), "{err}");
    one_line_naming(&err, "--frobnicate");
}

#[test]
fn interface_without_mac_is_refused() {
    let (code, err) = xlb(&["run", "--interface", "lo", "--vip", "192.0.2.1"]);
    assert_eq!(code, Some(2), "{err}");
    one_line_naming(&err, "\"lo\" has no Ethernet MAC");
}

#[test]
fn snat_mistakes_name_the_flag_and_the_fix() {
    let base = ["run", "--interface", "lo", "--vip", "192.0.2.10"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (code, err) = xlb(&args);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        err
    };
    let svc = "tcp:192.0.2.10:80=10.0.0.5:8080;mode=snat";
    one_line_naming(&run(&["--service", svc]), "add --snat-addr");
    one_line_naming(&run(&["--service", svc, "--snat-addr", "2001:db8::9"]), "add --snat-addr");
    one_line_naming(&run(&["--snat-addr", "192.0.2.10"]), "also a --vip");
    one_line_naming(&run(&["--snat-addr", "192.0.2.300"]), "--snat-addr \"192.0.2.300\"");
    one_line_naming(&run(&["--snat-addr", "192.0.2.20", "--snat-ports", "9000-8000"]), "LOW <= HIGH");
    one_line_naming(&run(&["--snat-addr", "192.0.2.20", "--snat-ports", "80"]), "LOW-HIGH");
    one_line_naming(&run(&["--service", "tcp:192.0.2.10:80=10.0.0.5:8080;mode=nat"]), "dsr or snat");
}

/// A Maglev table size is a prime, or `auto` (the default: sized to the backends).
#[test]
fn table_sizes_name_the_option_and_the_fix() {
    for (table, why) in [("1000", "Maglev table size 1000 is not a prime"), ("2", "between 3 and"), ("big", "or auto")]
    {
        let svc = format!("tcp:192.0.2.10:80=10.0.0.5:8080;table={table}");
        let (code, err) = xlb(&["run", "--interface", "lo", "--vip", "192.0.2.10", "--service", &svc]);
        assert_eq!(code, Some(2), "{table}: {err}");
        one_line_naming(&err, why);
    }
}

/// Two --service flags for one VIP, port and protocol: the second would silently replace the
/// first in the datapath while views showed the first.
#[test]
fn a_service_given_twice_is_refused() {
    let first = "tcp:192.0.2.10:80=10.0.0.5:8080";
    let again = "tcp:192.0.2.10:80=10.0.0.6:8080;mode=dsr";
    let (code, err) = xlb(&["run", "--interface", "lo", "--vip", "192.0.2.10", "--service", first, "--service", again]);
    assert_eq!(code, Some(2), "{err}");
    one_line_naming(&err, &format!("--service {again:?}: {first:?} already has that VIP, port and protocol"));
    // Another port, or another protocol, is another service.
    for other in ["tcp:192.0.2.10:81=10.0.0.6:8080", "udp:192.0.2.10:80=10.0.0.6:8080"] {
        let (_, err) =
            xlb(&["run", "--interface", "lo", "--vip", "192.0.2.10", "--service", first, "--service", other]);
        assert!(!err.contains("already has"), "{other}: {err}");
    }
}

/// A backend that is xlb's own address (a VIP, a SNAT address) or no host's address at all
/// would loop or go nowhere, and a flow table that no machine holds would abort the
/// process: refused at start (the config file's cases are in the table below).
#[test]
fn backends_that_are_not_hosts_and_oversized_tables_are_refused() {
    let base = ["run", "--interface", "lo", "--vip", "192.0.2.10", "--vip", "192.0.2.11"];
    let run = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let (code, err) = xlb(&args);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        err
    };
    one_line_naming(&run(&["--service", "tcp:192.0.2.10:80=192.0.2.11:80"]), "backend 192.0.2.11 is a --vip");
    one_line_naming(
        &run(&["--snat-addr", "192.0.2.20", "--service", "tcp:192.0.2.10:80=192.0.2.20:80"]),
        "backend 192.0.2.20 is a --snat-addr",
    );
    one_line_naming(&run(&["--service", "tcp:192.0.2.10:80=255.255.255.255:80"]), "is unspecified or broadcast");
    one_line_naming(&run(&["--service", "tcp:192.0.2.10:80=224.0.0.5:80"]), "backend 224.0.0.5 is multicast");
    one_line_naming(
        &run(&["--conntrack-capacity", "99999999999999"]),
        "--conntrack-capacity 99999999999999: give 1 to",
    );
    one_line_naming(
        &run(&["--conntrack-timeout", "tcpSynSnat=0"]),
        "--conntrack-timeout tcpSynSnat=0: 0 s is out of range: give 1 to 2592000 seconds",
    );
    one_line_naming(
        &run(&["--conntrack-timeout", "syn=5"]),
        "--conntrack-timeout syn=5: \"syn\" is not a timeout: give one of tcpSyn, tcpSynSnat,",
    );
    one_line_naming(&run(&["--conntrack-timeout", "tcpSyn"]), "--conntrack-timeout tcpSyn: expected NAME=SECONDS");
}

/// `xlb check --config PATH`, which must succeed: what it prints.
fn check_ok(path: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_xlb")).args(["check", "--config", path]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
    text
}

const GOOD_CONFIG: &str = r#"interfaces: [{name: lo}]
pools:
  - name: public
    blocks: [{cidr: 192.0.2.0/28}]
services:
  - name: web
    vip: 192.0.2.5
    ports: [{port: 80}]
    backends: [{address: 10.0.0.11}, {address: 10.0.0.12, weight: 2}]
  - name: api
    pool: public
    ports: [{port: 443}]
    backends: [{address: 10.0.0.21}]
"#;

fn with_config(text: &str, f: impl FnOnce(&str)) {
    // One directory per call: tests run in parallel, and two files may have the same length.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("xlb-cli-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("xlb.yaml");
    std::fs::write(&path, text).unwrap();
    f(path.to_str().unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_accepts_a_good_config_and_shows_the_vips() {
    with_config(GOOD_CONFIG, |p| {
        let text = check_ok(p);
        // The explicit VIP, and the lowest free one of the pool for the other.
        assert!(text.contains("web=192.0.2.5") && text.contains("api=192.0.2.1"), "{text}");
    });
    // And what it takes, counting the interface's RX queues (lo has one) when the config
    // gives none, else one queue when the interface is not on this machine.
    let elsewhere = GOOD_CONFIG.replacen("name: lo", "name: nosuch0", 1);
    for (config, counted) in
        [(GOOD_CONFIG, "(every RX queue of lo here)"), (&elsewhere, "(1 queue counted: nosuch0 is not on this machine")]
    {
        with_config(config, |p| {
            let text = check_ok(p);
            let memory = "\nmemory: 1 queue(s) x 141 MiB (conntrack 2,097,152 slots 128 MiB + UMEM 8 MiB";
            assert!(text.contains(memory) && text.contains(counted), "{text}");
        });
    }
}

/// A config file of several documents: xlb's settings, then Cilium's and MetalLB's objects
/// as users keep them (seed 002's Terraform-made pools and policies, seed 004's MetalLB
/// objects). `xlb check` shows where each VIP is announced and what is not served.
#[test]
fn check_reads_cilium_and_metallb_objects_beside_the_settings() {
    let seeds = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/seeds");
    let read = |f: &str| std::fs::read_to_string(format!("{seeds}/{f}")).unwrap();
    let text = format!(
        "interfaces: [{{name: eno1}}, {{name: eno2}}]
services:
  - name: my-service
    labels: {{network.example.com/interface: eno1}}
    ports: [{{port: 80}}]
    backends: [{{address: 10.0.0.11}}]
  - name: old
    pool: production-pool
    ports: [{{port: 81}}]
    backends: [{{address: 10.0.0.12}}]
---
{}---
{}",
        read("002-multi-interface.yaml"),
        read("004-metallb.yaml")
    );
    with_config(&text, |p| {
        let out = check_ok(p);
        assert!(out.contains("my-service=192.168.3.150") && out.contains("old=192.168.1.100"), "{out}");
        assert!(out.contains("192.168.3.150: announced on eno1"), "{out}");
        // The L2Advertisement names eth0 and needs a node label this box lacks: said.
        assert!(out.contains("note: 192.168.1.100 (old) is served but not announced"), "{out}");
        assert!(out.contains("note: document 8 (BFDProfile production-bfd): not served"), "{out}");
    });
}

/// `xlb check` refuses a config whose tables no machine holds, naming the field and the fix,
/// as `xlb run` would before opening anything.
#[test]
fn check_refuses_tables_that_do_not_fit_the_machine() {
    let text = GOOD_CONFIG
        .replacen("interfaces: [{name: lo}]", "interfaces: [{name: nosuch0, queues: 64}]", 1)
        .replacen("pools:", "conntrack: {capacity: 67108864}\nsnat: {addresses: [10.0.0.99]}\npools:", 1);
    with_config(&text, |p| {
        let (code, err) = xlb(&["check", "--config", p]);
        assert_eq!(code, Some(2), "{err}");
        one_line_naming(
            &err,
            "conntrack.capacity 67108864: 64 queue(s) x 8205 MiB (conntrack 134,217,728 slots 8192 MiB",
        );
        for fix in ["lower conntrack.capacity", "narrow snat.ports", "or serve fewer queues"] {
            assert!(err.contains(fix), "{fix}: {err}");
        }
    });
}

/// A dozen kinds of mistakes: each is refused with exit 2, in one line naming the field.
#[test]
fn invalid_configs_name_the_field_with_exit_2() {
    let cases: &[(&str, &str, &str)] = &[
        ("cidr: 192.0.2.0/28", "cidr: 192.0.2.0/40", "pools[0].blocks[0].cidr"),
        ("vip: 192.0.2.5", "vip: 198.51.100.5", "services[0].vip: 198.51.100.5 is in no pool"),
        ("name: api", "name: web", "services[1].name: duplicate service name"),
        ("weight: 2", "weight: 1001", "services[0].backends[1].weight: 1001 is out of range"),
        ("[{port: 443}]", "[{port: 0}]", "services[1].ports[0].port: 0 is not a port"),
        ("pool: public", "vip: 192.0.2.5", "services[1].ports[0]: tcp port"),
        ("pool: public", "pool: private", "services[1].pool: no pool named \"private\""),
        ("address: 10.0.0.21", "address: 10.0.0.300", "services[1].backends[0].address"),
        ("[{port: 443}]", "[{port: 443, protocol: SCTP}]", "services[1].ports[0].protocol"),
        ("interfaces: [{name: lo}]", "interfaces: []", "interfaces: no interface"),
        (
            "cidr: 192.0.2.0/28",
            "start: 192.0.2.9, stop: 192.0.2.1",
            "pools[0].blocks[0]: stop 192.0.2.1 comes before start 192.0.2.9",
        ),
        (
            "ports: [{port: 80}]",
            "ports: [{port: 80}]\n    mode: snat",
            "services[0].mode: snat needs an IPv4 address in snat.addresses",
        ),
        ("ports: [{port: 80}]", "ports: [{port: 80}]\n    colour: blue", "colour"),
        ("pools:", "ha: {peers: [a, b, a]}\npools:", "ha.peers: a name is given twice"),
        ("pools:", "ha: {node: c, peers: [a, b]}\npools:", "ha.node: \"c\" is not one of ha.peers"),
        (
            "pools:",
            "ha: {peers: [a, b], takeoverMs: 300}\npools:",
            "ha.takeoverMs: 300 ms must be less than heartbeatIntervalMs x deadAfter (250 ms)",
        ),
        (
            "pools:",
            "ha: {peers: [a, b], gratuitousArpMs: [0, 50, 250]}\npools:",
            "ha.gratuitousArpMs: [0, 50, 250]: give four ascending offsets",
        ),
        ("pools:", "ha: {peers: [a, b], refreshSeconds: 7200}\npools:", "ha.refreshSeconds: 7200 is over 3600"), // Backends that are xlb's own addresses or no host's: the fixed VIP of another
        // service, the VIP a pool gives another (api gets the lowest free, 192.0.2.1), a
        // broadcast address, a SNAT address; and a flow table no machine holds.
        (
            "address: 10.0.0.21",
            "address: 192.0.2.5",
            "services[1].backends[0].address: 192.0.2.5 is the VIP of service \"web\"",
        ),
        (
            "address: 10.0.0.11",
            "address: 192.0.2.1",
            "services[0].backends[0].address: 192.0.2.1 is the VIP of service \"api\"",
        ),
        (
            "address: 10.0.0.21",
            "address: 255.255.255.255",
            "services[1].backends[0].address: 255.255.255.255 is not a unicast address",
        ),
        (
            "pools:",
            "snat: {addresses: [10.0.0.21]}\npools:",
            "services[1].backends[0].address: 10.0.0.21 is one of snat.addresses",
        ),
        ("pools:", "conntrack: {capacity: 99999999999999}\npools:", "conntrack.capacity: 99999999999999 flows is over"),
        (
            "backends: [{address: 10.0.0.21}]",
            "backends: [{address: 10.0.0.21}]\n    maglevTableSize: 1000",
            "services[1].maglevTableSize: 1000 is not a prime",
        ),
    ];
    // The port clash needs two services on one VIP and port.
    for (from, to, want) in cases {
        let text = if *want == "services[1].ports[0]: tcp port" {
            GOOD_CONFIG.replacen(from, to, 1).replacen("[{port: 443}]", "[{port: 80}]", 1)
        } else {
            GOOD_CONFIG.replacen(from, to, 1)
        };
        assert_ne!(text, GOOD_CONFIG, "{from} not in the fixture");
        with_config(&text, |p| {
            let (code, err) = xlb(&["check", "--config", p]);
            assert_eq!(code, Some(2), "{want}: {err}");
            one_line_naming(&err, want);
            // xlb run refuses it the same way, before touching anything.
            let (code, err) = xlb(&["run", "--config", p]);
            assert_eq!(code, Some(2), "{want}: {err}");
            one_line_naming(&err, want);
        });
    }
    // The interface is checked when xlb runs.
    with_config(&GOOD_CONFIG.replacen("name: lo", "name: nosuch0", 1), |p| {
        let (code, err) = xlb(&["run", "--config", p]);
        assert_eq!(code, Some(2), "{err}");
        one_line_naming(&err, "interfaces[0].name: interface \"nosuch0\" not found");
    });
}

#[test]
fn client_commands_say_when_no_xlb_runs() {
    let (code, err) = xlb(&["status", "--socket", "/nonexistent/xlb.sock"]);
    assert_eq!(code, Some(1), "{err}");
    one_line_naming(&err, "cannot reach xlb at /nonexistent/xlb.sock");
}

/// `xlb migrate` on the seeds' manifests: xlb objects on stdout, a summary on stderr; a file
/// that is not there, or a document that is not an object, is named in one line.
#[test]
fn migrate_writes_xlb_objects_and_names_bad_input() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let seed = |f: &str| format!("{dir}/tests/fixtures/seeds/{f}");
    let out = Command::new(env!("CARGO_BIN_EXE_xlb"))
        .args([
            "migrate",
            "-f",
            &seed("001-pitower-cilium.yaml"),
            "-f",
            &seed("004-metallb.yaml"),
            "-f",
            &seed("003-bgp.yaml"),
        ])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(stdout.matches("kind: LoadBalancerIPPool").count(), 2, "{stdout}");
    assert_eq!(stdout.matches("kind: L2AnnouncementPolicy").count(), 2, "{stdout}");
    assert!(stdout.contains("# not expressible: BFDProfile has no xlb equivalent yet"), "{stdout}");
    // Seed 003's peering policy: a peer and an advertisement of the labelled nodes.
    assert!(
        stdout.contains("kind: BGPPeer\nmetadata:\n  name: vyos-peering-0-0\nspec:\n  gracefulRestart: false\n  localASN: 64513\n  nodeSelector:\n    matchLabels:\n      bgp: enabled\n  peerASN: 64512\n  peerAddress: \"10.10.30.1\""),
        "{stdout}"
    );
    assert!(stdout.contains("kind: BGPAdvertisement\nmetadata:\n  name: vyos-peering-0\n"), "{stdout}");
    one_line_naming(&stderr, "objects read: 6; written exactly: 4");
    let (code, err) = xlb(&["migrate", "-f", "/nonexistent/pools.yaml"]);
    assert_ne!(code, Some(0));
    one_line_naming(&err, "/nonexistent/pools.yaml");
    let dir = std::env::temp_dir().join(format!("xlb-cli-migrate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "kind: CiliumLoadBalancerIPPool\n").unwrap();
    let (code, err) = xlb(&["migrate", "-f", &bad.to_string_lossy()]);
    assert_ne!(code, Some(0));
    one_line_naming(&err, "document 1: not a Kubernetes object: give apiVersion and kind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_says_which_vips_bgp_advertises_and_which_cannot_be() {
    let text = "interfaces: [{name: eth0}]
services:
  - {name: web, vip: 10.93.0.1, ports: [{port: 80}], backends: [{address: 10.91.0.11}]}
  - {name: web6, vip: 'fd93::1', ports: [{port: 80}], backends: [{address: 'fd91::11'}]}
  - {name: lan, vip: 10.94.0.1, ports: [{port: 80}], backends: [{address: 10.91.0.11}]}
  - {name: api, vip: 10.93.0.1, mode: snat, ports: [{port: 81}], backends: [{address: 10.91.0.11}]}
snat: {addresses: [10.91.0.250]}
bgp:
  localASN: 64512
  peers: [{peerAddress: 10.91.0.1, peerASN: 64500}]
  advertisements: [{services: [web, web6]}, {services: [web], l2: true}]
";
    with_config(text, |p| {
        let out = check_ok(p);
        assert!(
            out.contains(
                "10.93.0.1: advertised by BGP to 10.91.0.1 (AS64500) (bgp.advertisements[0], bgp.advertisements[1]; also on the segment)"
            ),
            "{out}"
        );
        assert!(out.contains("note: bgp: fd93::1 has no peer of its family"), "{out}");
        assert!(!out.contains("10.94.0.1: advertised"), "{out}");
        assert!(out.contains("note: bgp: 10.93.0.1 is routed and has SNAT services (api/tcp:81)"), "{out}");
    });
}
