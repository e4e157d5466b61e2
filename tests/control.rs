//! Lab tests of the standalone control plane: xlb run from a config file, reloaded 100 times
//! under traffic, health checks taking a dead backend out and back, an invalid reload
//! refused, and the admin CLI and /metrics agreeing with each other under traffic.

#![allow(clippy::unwrap_used, clippy::cast_possible_truncation)] // test code: a panic is the report

mod support;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use support::{
    dsr_backend, dsr_servers, kill_processes,
    traffic::{in_netns, tcp_connections, wait_ready},
    Host, Lab, Xlb,
};

const VIP: &str = "10.79.0.100";

/// The lab: client .1, lb .2, DSR backends .11-.1N serving TCP and UDP on port 80.
fn lab(test: &str, backends: u8) -> Option<(Lab, Host, Host, Vec<Host>)> {
    let mut lab = Lab::new(test)?;
    let client = lab.host("client", &["10.79.0.1/24"], 1);
    let lb = lab.host("lb", &["10.79.0.2/24"], 1);
    let mut bs = Vec::new();
    for i in 1..=backends {
        let b = lab.host(&format!("backend-{i}"), &[&format!("10.79.0.1{i}/24")], 1);
        dsr_backend(&lab, &b, &format!("backend-{i}"), &[VIP], 80);
        bs.push(b);
    }
    Some((lab, client, lb, bs))
}

/// A config with service `web` on VIP:80 (TCP and UDP) over these (backend number, weight).
fn config(backends: &[(u8, u32)], extra_service: &str, extra: &str) -> String {
    let list: Vec<String> = backends.iter().map(|(i, w)| format!("{{address: 10.79.0.1{i}, weight: {w}}}")).collect();
    format!(
        r#"interfaces: [{{name: eth0}}]
pools:
  - name: lab
    blocks: [{{cidr: 10.79.0.96/28}}]
announce: {{dadProbes: 0, garpCount: 1}}
services:
  - name: web
    vip: {VIP}
    ports: [{{port: 80}}, {{port: 80, protocol: UDP}}]
    backends: [{}]
{extra_service}
{extra}
"#,
        list.join(", ")
    )
}

/// Writes the config atomically (a reader never sees half a file).
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn status(xlb: &Xlb) -> serde_json::Value {
    let (ok, out, err) = xlb.cli(&["status", "-o", "json"]);
    assert!(ok, "xlb status failed: {err}");
    serde_json::from_str(&out).unwrap()
}

fn backend_list(xlb: &Xlb) -> Vec<serde_json::Value> {
    let (ok, out, err) = xlb.cli(&["backend", "list", "-o", "json"]);
    assert!(ok, "xlb backend list failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["backends"].as_array().unwrap().clone()
}

fn start(lab: &Lab, lb: &Host, text: &str) -> (Xlb, PathBuf) {
    let path = lab.dir.join("xlb.yaml");
    write_config(&path, text);
    let mut xlb = Xlb::start_config(lab, lb, &path, &[]);
    wait_ready(&mut xlb, text.matches("address: 10.79.0.1").count().min(4));
    (xlb, path)
}

#[test]
fn a_hundred_reloads_under_traffic_lose_nothing() {
    let Some((lab, client, lb, _backends)) = lab("a_hundred_reloads_under_traffic", 4) else { return };
    let (mut xlb, path) = start(&lab, &lb, &config(&[(1, 1), (2, 1), (3, 1), (4, 1)], "", ""));
    write_config(&path, &config(&[(1, 1), (2, 1), (3, 1)], "", ""));
    xlb.hup();
    xlb.wait_log("config reloaded", Duration::from_secs(5));

    // A long-lived connection: opened now, pinged all through the reloads.
    let stop = Arc::new(AtomicBool::new(false));
    let (long_tx, long_rx) = std::sync::mpsc::channel::<String>();
    let long = {
        let stop = stop.clone();
        let ns = client.ns.clone();
        std::thread::spawn(move || {
            support::enter_netns_for_tests(&ns).unwrap();
            let mut s =
                TcpStream::connect_timeout(&format!("{VIP}:80").parse().unwrap(), Duration::from_secs(2)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.write_all(b"hold\n").unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            r.read_line(&mut first).unwrap();
            let name = first.split_whitespace().next().unwrap().to_string();
            long_tx.send(name.clone()).unwrap();
            let mut pings = 0u32;
            while !stop.load(Ordering::Relaxed) {
                pings += 1;
                s.write_all(format!("ping {pings}\n").as_bytes()).map_err(|e| format!("ping {pings}: {e}"))?;
                let mut line = String::new();
                r.read_line(&mut line).map_err(|e| format!("ping {pings}: {e}"))?;
                if line.trim() != format!("{name} ping {pings}") {
                    return Err(format!("ping {pings}: answered {line:?}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok::<(String, u32), String>((name, pings))
        })
    };
    let pinned = long_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let pinned_n: u8 = pinned.trim_start_matches("backend-").parse().unwrap();

    // Short connections and UDP requests, all the time.
    let (ok, failed, udp_ok, udp_lost) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let traffic = {
        let (stop, ok, failed, udp_ok, udp_lost, failures) =
            (stop.clone(), ok.clone(), failed.clone(), udp_ok.clone(), udp_lost.clone(), failures.clone());
        let ns = client.ns.clone();
        std::thread::spawn(move || {
            support::enter_netns_for_tests(&ns).unwrap();
            let vip: SocketAddr = format!("{VIP}:80").parse().unwrap();
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let out = tcp_connections(vip, 1);
                if out.failures.is_empty() {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    failures.lock().unwrap().extend(out.failures);
                }
                u.send_to(format!("udp {i}").as_bytes(), vip).unwrap();
                let mut buf = [0u8; 128];
                match u.recv_from(&mut buf) {
                    Ok((n, _)) if String::from_utf8_lossy(&buf[..n]).ends_with(&format!("udp {i}")) => {
                        udp_ok.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => udp_lost.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    // 100 reloads: a 4th backend comes and goes, others leave and come back, weights
    // change, one is drained; the long-lived connection's backend always stays.
    let others: Vec<u8> = (1..=4).filter(|i| *i != pinned_n).collect();
    let t0 = Instant::now();
    for round in 0..100usize {
        let k = others[round % others.len()];
        let set: Vec<(u8, u32)> = match round % 4 {
            0 => (1..=4).map(|i| (i, 1 + u32::from(i) % 3)).collect(),
            1 => (1..=4).filter(|i| *i != k).map(|i| (i, 1)).collect(),
            2 => (1..=4).map(|i| (i, if i == k { 0 } else { 2 })).collect(),
            _ => (1..=4).filter(|i| *i != k && *i != others[(round + 1) % others.len()]).map(|i| (i, 1)).collect(),
        };
        write_config(&path, &config(&set, "", ""));
        xlb.hup();
        let want = round + 2; // one reload before the loop
        let end = Instant::now() + Duration::from_secs(5);
        while xlb.log_text().matches("config reloaded").count() < want {
            assert!(Instant::now() < end, "reload {round} not applied:\n{}", xlb.log_text());
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    let reload_time = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
    let long_result = long.join().unwrap();
    let st = status(&xlb);
    // The final set spreads new connections over its backends.
    let last = tcp_connections_from(&client, 300);
    let stats = xlb.stop();
    let (ok, failed, udp_ok, udp_lost) = (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        udp_ok.load(Ordering::Relaxed),
        udp_lost.load(Ordering::Relaxed),
    );
    eprintln!(
        "100 reloads in {reload_time:?}: TCP {ok} ok / {failed} failed, UDP {udp_ok} answered / {udp_lost} lost, \
         long-lived on {pinned}: {long_result:?}, generation {}, final spread {:?}",
        st["generation"], last
    );
    assert_eq!(failed, 0, "failed connections: {:?}", failures.lock().unwrap());
    assert_eq!(udp_lost, 0);
    assert!(ok > 100 && udp_ok > 100, "too little traffic: {ok} {udp_ok}");
    let (_, pings) = long_result.expect("the long-lived connection broke");
    assert!(pings > 50);
    assert!(st["generation"].as_u64().unwrap() >= 100, "{st}");
    assert!(st["reloads"].as_u64().unwrap() >= 101, "{st}");
    assert_eq!(stats["drops"]["no_backend"], 0, "{stats}");
    assert!(last.len() >= 2, "{last:?}");
}

fn tcp_connections_from(client: &Host, n: usize) -> HashMap<String, usize> {
    let out = in_netns(&client.ns, move || tcp_connections(format!("{VIP}:80").parse().unwrap(), n));
    assert!(out.failures.is_empty(), "{:?}", out.failures);
    out.by_backend
}

#[test]
fn a_dead_backend_leaves_within_interval_times_fall_and_comes_back() {
    let Some((lab, client, lb, backends)) = lab("a_dead_backend_leaves_and_comes_back", 3) else { return };
    let health = "    healthCheck: {type: tcp, intervalMs: 200, timeoutMs: 100, rise: 2, fall: 2}";
    let (mut xlb, _path) = start(&lab, &lb, &config(&[(1, 1), (2, 1), (3, 1)], health, ""));
    let all = tcp_connections_from(&client, 150);
    assert_eq!(all.len(), 3, "{all:?}");

    kill_processes(&backends[1].ns);
    let killed = Instant::now();
    let down_after = loop {
        let b = backend_list(&xlb);
        let b2 = b.iter().find(|b| b["backend"] == "10.79.0.12:80" && b["service"] == "web/tcp:80").unwrap();
        if b2["health"] == "down" {
            break killed.elapsed();
        }
        assert!(killed.elapsed() < Duration::from_secs(5), "never marked down: {b:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("health: backend-2 marked down {down_after:?} after its server died (interval 200 ms x fall 2)");
    assert!(down_after <= Duration::from_millis(400 + 150), "marked down after {down_after:?}");
    // New connections avoid it (none fails: nothing goes to the dead server).
    let during = tcp_connections_from(&client, 150);
    assert!(!during.contains_key("backend-2"), "{during:?}");
    assert_eq!(during.values().sum::<usize>(), 150);

    dsr_servers(&lab, &backends[1], "backend-2", VIP, 80);
    let restarted = Instant::now();
    loop {
        let b = backend_list(&xlb);
        if b.iter().any(|b| b["backend"] == "10.79.0.12:80" && b["health"] == "up") {
            break;
        }
        assert!(restarted.elapsed() < Duration::from_secs(5), "never came back: {b:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("health: backend-2 up again {:?} after its server restarted (rise 2)", restarted.elapsed());
    let after = tcp_connections_from(&client, 150);
    assert!(after.contains_key("backend-2"), "{after:?}");
    xlb.wait_log("backend is up again", Duration::from_secs(1));
    let _ = xlb.stop();
}

#[test]
fn an_invalid_reload_changes_nothing_and_says_why() {
    let Some((lab, client, lb, _backends)) = lab("an_invalid_reload_changes_nothing", 2) else { return };
    let (mut xlb, path) = start(&lab, &lb, &config(&[(1, 1), (2, 1)], "", ""));
    let before = status(&xlb);
    write_config(&path, &config(&[(1, 5000), (2, 1)], "", ""));
    xlb.hup();
    xlb.wait_log("config reload refused", Duration::from_secs(5));
    assert!(xlb.log_text().contains("services[0].backends[0].weight: 5000 is out of range"), "{}", xlb.log_text());
    let after = status(&xlb);
    assert_eq!(after["generation"], before["generation"], "{after}");
    assert!(after["last_reload_error"].as_str().unwrap().contains("weight"), "{after}");
    // A VIP outside every pool is refused the same way.
    write_config(&path, &config(&[(1, 1)], "", "").replace("vip: 10.79.0.100", "vip: 10.79.0.150"));
    xlb.hup();
    let end = Instant::now() + Duration::from_secs(5);
    while !xlb.log_text().contains("10.79.0.150 is in no pool") {
        assert!(Instant::now() < end, "{}", xlb.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Still serving both backends of the running config.
    let spread = tcp_connections_from(&client, 100);
    assert_eq!(spread.len(), 2, "{spread:?}");
    let stats = xlb.stop();
    assert_eq!(stats["reload_failures"], 2, "{stats}");
}

/// GET http://addr/metrics from inside `ns`.
fn scrape(ns: &str, addr: &str) -> String {
    let ns = ns.to_string();
    let addr = addr.to_string();
    in_netns(&ns, move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text
    })
}

/// The value of the series `name{labels}` in a scrape.
fn series(text: &str, prefix: &str) -> Option<u64> {
    text.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

#[test]
fn metrics_and_the_cli_agree_under_traffic() {
    let Some((lab, client, lb, _backends)) = lab("metrics_and_the_cli_agree", 3) else { return };
    let (xlb, _path) = start(&lab, &lb, &config(&[(1, 1), (2, 1), (3, 2)], "", "metrics: {listen: 127.0.0.1:9180}"));
    let before = scrape(&lb.ns, "127.0.0.1:9180");
    let spread = tcp_connections_from(&client, 400);
    std::thread::sleep(Duration::from_millis(100));
    let cli = backend_list(&xlb);
    let after = scrape(&lb.ns, "127.0.0.1:9180");
    let fwd = |t: &str| series(t, "xlb_forwarded_packets_total{interface=\"eth0\",queue=\"0\"}").unwrap();
    assert!(fwd(&after) >= fwd(&before) + 400 * 3, "forwarded did not move: {} -> {}", fwd(&before), fwd(&after));
    // Per backend: the CLI's packets equal the metric's.
    for b in cli.iter().filter(|b| b["service"] == "web/tcp:80") {
        let name = b["backend"].as_str().unwrap();
        let m =
            series(&after, &format!("xlb_backend_packets_total{{service=\"web/tcp:80\",backend=\"{name}\"}}")).unwrap();
        assert_eq!(b["packets"].as_u64().unwrap(), m, "{name}: CLI {b} vs metrics {m}");
        assert!(m > 0);
    }
    // The weights show in the shares: backend-3 (weight 2) about half of the table.
    let b3 = cli.iter().find(|b| b["backend"] == "10.79.0.13:80" && b["service"] == "web/tcp:80").unwrap();
    let share: f64 = b3["share"].as_str().unwrap().trim_end_matches('%').parse().unwrap();
    assert!((49.0..=51.0).contains(&share), "{b3}");
    for needle in [
        "xlb_dropped_packets_total{interface=\"eth0\",queue=\"0\",reason=\"truncated\"}",
        "xlb_conntrack_entries{interface=\"eth0\",queue=\"0\"}",
        "xlb_batch_duration_seconds_bucket{le=",
        "xlb_backend_up{service=\"web/tcp:80\",backend=\"10.79.0.11:80\"} 1",
        "xlb_vip_owned{vip=\"10.79.0.100\",state=\"owned\"} 1",
        "xlb_snapshot_generation ",
        "xlb_arp_replies_total{interface=\"eth0\",queue=\"0\"}",
        "# EOF",
    ] {
        assert!(after.contains(needle), "{needle} missing from:\n{after}");
    }
    // The other views answer, as tables.
    let (ok, table, _) = xlb.cli(&["service", "list"]);
    assert!(ok && table.contains("web/tcp:80") && table.contains("web/udp:80") && table.contains("dsr"), "{table}");
    let (ok, table, _) = xlb.cli(&["pool", "list"]);
    assert!(ok && table.contains("lab") && table.contains("14"), "{table}");
    let (ok, table, _) = xlb.cli(&["maglev", "show", "web/tcp:80"]);
    assert!(ok && table.contains("table size 1021 (auto)") && table.contains("10.79.0.13:80"), "{table}");
    let (ok, table, _) = xlb.cli(&["status"]);
    assert!(ok && table.contains("eth0") && table.contains("10.79.0.100") && table.contains("owned"), "{table}");
    let (ok, json, err) = xlb.cli(&["conntrack", "list", "-o", "json", "--service", "web"]);
    assert!(ok, "{err}");
    let flows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(!flows["flows"].as_array().unwrap().is_empty(), "{flows}");
    eprintln!("metrics/CLI: 400 connections {spread:?}; backend-3 share {share}%");
}

/// Opens a long-lived connection from the client; returns the backend's name, a writer and
/// a reader of its lines.
fn hold(client: &Host) -> (String, TcpStream, BufReader<TcpStream>) {
    let ns = client.ns.clone();
    in_netns(&ns, || {
        let mut s = TcpStream::connect_timeout(&format!("{VIP}:80").parse().unwrap(), Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"hold\n").unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut first = String::new();
        r.read_line(&mut first).unwrap();
        (first.split_whitespace().next().unwrap().to_string(), s, r)
    })
}

fn ping(name: &str, s: &mut TcpStream, r: &mut BufReader<TcpStream>, n: u32) {
    s.write_all(format!("ping {n}\n").as_bytes()).unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap_or_else(|e| panic!("ping {n}: {e}"));
    assert_eq!(line.trim(), format!("{name} ping {n}"));
}

#[test]
fn a_drained_or_removed_backend_keeps_its_flows_and_file_edits_reload() {
    let Some((lab, client, lb, _backends)) = lab("a_drained_backend_keeps_its_flows", 2) else { return };
    let (mut xlb, path) = start(&lab, &lb, &config(&[(1, 1), (2, 1)], "", ""));
    let (name, mut s, mut r) = hold(&client);
    let n: u8 = name.trim_start_matches("backend-").parse().unwrap();
    let other = 3 - n;
    // Weight 0, by editing the file (no signal): xlb sees the change within a second.
    write_config(&path, &config(&[(n, 0), (other, 1)], "", ""));
    xlb.wait_log("config file changed", Duration::from_secs(5));
    xlb.wait_log("config reloaded", Duration::from_secs(2));
    for i in 1..=20 {
        ping(&name, &mut s, &mut r, i);
    }
    let new = tcp_connections_from(&client, 100);
    assert!(!new.contains_key(&name), "a drained backend got new flows: {new:?}");
    // Removed from the config: it drains, so the connection still works.
    write_config(&path, &config(&[(other, 1)], "", ""));
    xlb.hup();
    let end = Instant::now() + Duration::from_secs(5);
    while xlb.log_text().matches("config reloaded").count() < 2 {
        assert!(Instant::now() < end, "{}", xlb.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    for i in 21..=40 {
        ping(&name, &mut s, &mut r, i);
    }
    let listed = backend_list(&xlb);
    assert!(
        listed.iter().any(|b| b["backend"] == format!("10.79.0.1{n}:80") && b["health"] == "draining"),
        "{listed:?}"
    );
    assert!(xlb.log_text().contains("backend removed: draining"), "{}", xlb.log_text());
    drop(s);
    let _ = xlb.stop();
}

#[test]
fn source_ranges_let_one_client_in_and_keep_another_out() {
    let Some((mut lab, client, lb, _backends)) = lab("source_ranges", 2) else { return };
    let outsider = lab.host("outsider", &["10.79.0.3/24"], 1);
    let ranges = "    sourceRanges: [10.79.0.1/32, 2001:db8::/32]";
    let (mut xlb, path) = start(&lab, &lb, &config(&[(1, 1), (2, 1)], ranges, ""));
    let addr: SocketAddr = format!("{VIP}:80").parse().unwrap();
    let inside = in_netns(&client.ns, move || tcp_connections(addr, 10));
    assert!(inside.failures.is_empty(), "the admitted client: {:?}", inside.failures);
    let outside = in_netns(&outsider.ns, move || tcp_connections(addr, 3));
    assert_eq!(outside.failures.len(), 3, "the other client got in: {outside:?}");
    // The ranges come out of the file and the outsider is let in.
    write_config(&path, &config(&[(1, 1), (2, 1)], "", ""));
    xlb.hup();
    xlb.wait_log("config reloaded", Duration::from_secs(5));
    let after = in_netns(&outsider.ns, move || tcp_connections(addr, 5));
    assert!(after.failures.is_empty(), "without ranges: {:?}", after.failures);
    let stats = xlb.stop();
    // Each refused connection is a SYN and its retransmissions, every one counted.
    let refused = stats["drops"]["source_range"].as_u64().unwrap();
    println!("source_range drops: {refused} (3 refused connections)");
    assert!(refused >= 3, "{}", stats["drops"]);
}
