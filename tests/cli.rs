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
