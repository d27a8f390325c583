//! macvlan and tun/tap links in the tree's network namespace. In a network namespace of the
//! test's own (a veth pair `crlo0`/`crlo1` there is the macvlan's lower device), a counter in
//! a namespace of its own has a persistent tap (`crtap0`, MTU 1400, an address, up), a
//! persistent tun (`crtun0`, an address) and a macvlan `crmv0` in private mode on `crlo0` (made
//! outside, moved in; a MAC and an address, up). `criu dump` then `criu restore --external
//! macvlan[crmv0]:crlo0`, twice: the links come back with their kinds, modes, flags, MACs,
//! MTUs and addresses, and the count carries on. A restore without the lower device named is
//! refused before any task exists.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, become_subreaper, criu, dump_and_reap, in_netns, restore_detached,
    skip_if_not_root, test_lock, wait_file,
};

fn sh(script: &str) -> String {
    let o = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        o.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The links and addresses of `pid`'s network namespace that the test checks, one line each.
fn snapshot(pid: i32) -> Vec<String> {
    let links: serde_json::Value =
        serde_json::from_str(&sh(&format!("nsenter -t {pid} -n ip -d -j link show"))).unwrap();
    let addrs: serde_json::Value =
        serde_json::from_str(&sh(&format!("nsenter -t {pid} -n ip -j addr show"))).unwrap();
    let mut out = Vec::new();
    for l in links.as_array().unwrap() {
        let d = &l["linkinfo"]["info_data"];
        let up = l["flags"]
            .as_array()
            .is_some_and(|f| f.iter().any(|x| x == "UP"));
        out.push(format!(
            "{} kind={} mode={} type={} pi={} persist={} mtu={} up={up} mac={}",
            l["ifname"],
            l["linkinfo"]["info_kind"],
            d["mode"],
            d["type"],
            d["pi"],
            d["persist"],
            l["mtu"],
            l["address"]
        ));
    }
    for a in addrs.as_array().unwrap() {
        for i in a["addr_info"].as_array().unwrap() {
            if i["family"] == "inet" {
                out.push(format!("{} {}/{}", a["ifname"], i["local"], i["prefixlen"]));
            }
        }
    }
    out.sort();
    out
}

fn counts(out: &Path) -> usize {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .count()
}

fn spawn(d: &Path) -> Spawned {
    let counter = env!("CARGO_BIN_EXE_criu-victim-counter");
    let out = d.join("count");
    let ready = d.join("ready");
    let script = format!(
        "set -e
ip link set lo up
ip tuntap add dev crtap0 mode tap
ip link set crtap0 mtu 1400
ip addr add 10.96.0.1/24 dev crtap0
ip link set crtap0 up
ip tuntap add dev crtun0 mode tun
ip addr add 10.95.0.1/24 dev crtun0
while ! ip link show crmv0 >/dev/null 2>&1; do sleep 0.01; done
ip link set crmv0 address 02:00:00:00:00:42
ip addr add 10.94.0.2/24 dev crmv0
ip link set crmv0 up
exec {counter} {} {}
",
        out.display(),
        ready.display()
    );
    let v = Spawned::spawn(
        "/usr/bin/unshare",
        &["-n", "sh", "-c", &script],
        &d.join("victim.log"),
        None,
    );
    // The macvlan on the test's own lower device, moved into the counter's namespace.
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{}/ns/net", v.pid())).ok()
        == std::fs::read_link("/proc/thread-self/ns/net").ok()
    {
        assert!(std::time::Instant::now() < end, "the counter's namespace");
        std::thread::sleep(Duration::from_millis(5));
    }
    sh(&format!(
        "ip link add crmv0 link crlo0 type macvlan mode private && ip link set crmv0 netns {}",
        v.pid()
    ));
    wait_file(&ready, Duration::from_secs(10));
    v
}

#[test]
fn macvlan_and_tun_tap_links_come_back_twice() {
    skip_if_not_root!("macvlan_and_tun_tap_links_come_back_twice");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = Scratch::new();
        sh(
            "ip link add crlo0 type veth peer name crlo1 && ip link set crlo0 up && \
            ip link set crlo1 up",
        );
        let mut v = spawn(dir.root());
        let before = snapshot(v.pid());
        for want in [
            "\"crtap0\" kind=\"tun\"",
            "\"crtun0\" kind=\"tun\"",
            "\"crmv0\" kind=\"macvlan\" mode=\"private\"",
        ] {
            assert!(
                before.iter().any(|l| l.starts_with(want)),
                "{want}: {before:#?}"
            );
        }
        let out = dir.root().join("count");
        for round in 0..2 {
            let img = dir.path(&format!("img{round}"));
            let at_dump = counts(&out);
            dump_and_reap(&mut v, &img, &[]);
            if round == 0 {
                let o = criu(&[
                    "restore",
                    "-D",
                    img.to_str().unwrap(),
                    "-o",
                    "restore-nolower.log",
                    "-d",
                ]);
                assert!(!o.status.success(), "restored without the lower device");
                let log =
                    std::fs::read_to_string(img.join("restore-nolower.log")).unwrap_or_default();
                assert!(
                    log.contains(
                        "macvlan crmv0 needs its lower device: --external macvlan[crmv0]:LOWER"
                    ),
                    "{log}"
                );
                assert!(!log.contains("root created"), "{log}");
            }
            let pid = restore_detached(&img, &["--external", "macvlan[crmv0]:crlo0"]);
            v = Spawned::guard(pid);
            assert_eq!(snapshot(pid), before, "round {round}");
            std::thread::sleep(Duration::from_millis(200));
            assert!(
                counts(&out) > at_dump + 5,
                "round {round}: the count stopped"
            );
        }
        drop(v);
    });
}

/// The descriptor of `pid` open on `/dev/net/tun` and the device fdinfo says it is attached to.
fn tun_attached(pid: i32) -> Option<String> {
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if std::fs::read_link(e.path()).ok()? != Path::new("/dev/net/tun") {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            e.file_name().to_string_lossy()
        ))
        .ok()?;
        return info
            .lines()
            .find_map(|l| l.strip_prefix("iff:"))
            .map(|v| v.trim().to_string());
    }
    None
}

/// A tap that only the task's `/dev/net/tun` descriptor keeps (not persistent): the descriptor
/// is dumped with the device it is attached to, the restore makes the device, the task attaches
/// to it again and the device is not persistent any more; twice.
#[test]
fn a_tap_held_open_by_the_task_comes_back_attached_twice() {
    skip_if_not_root!("a_tap_held_open_by_the_task_comes_back_attached_twice");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = Scratch::new();
        let out = dir.root().join("count");
        let ready = dir.root().join("ready");
        let victim = env!("CARGO_BIN_EXE_criu-victim-tun");
        let mut v = Spawned::spawn(
            "/usr/bin/unshare",
            &[
                "-n",
                "sh",
                "-c",
                &format!(
                    "ip link set lo up && exec {victim} {} {}",
                    out.display(),
                    ready.display()
                ),
            ],
            &dir.path("victim.log"),
            None,
        );
        wait_file(&ready, Duration::from_secs(10));
        let before = snapshot(v.pid());
        assert!(
            before
                .iter()
                .any(|l| l.starts_with("\"crtapf0\" kind=\"tun\"")
                    && l.contains("persist=false")
                    && l.contains("up=true")),
            "{before:#?}"
        );
        assert_eq!(tun_attached(v.pid()).as_deref(), Some("crtapf0"));
        for round in 0..2 {
            let img = dir.path(&format!("img{round}"));
            let at_dump = counts(&out);
            dump_and_reap(&mut v, &img, &[]);
            let pid = restore_detached(&img, &[]);
            v = Spawned::guard(pid);
            assert_eq!(snapshot(pid), before, "round {round}");
            assert_eq!(
                tun_attached(pid).as_deref(),
                Some("crtapf0"),
                "round {round}"
            );
            std::thread::sleep(Duration::from_millis(200));
            assert!(
                counts(&out) > at_dump + 5,
                "round {round}: the count stopped"
            );
        }
        drop(v);
    });
}

/// A tap held open by a task in criu's own network namespace: nothing saves the device there,
/// so the dump refuses the descriptor by name (as CRIU does) and the task runs on.
#[test]
fn a_tap_in_criu_s_own_network_namespace_is_refused_by_name() {
    skip_if_not_root!("a_tap_in_criu_s_own_network_namespace_is_refused_by_name");
    let _g = test_lock();
    become_subreaper();
    in_netns(|| {
        let dir = Scratch::new();
        let out = dir.root().join("count");
        let ready = dir.root().join("ready");
        let v = Spawned::spawn(
            env!("CARGO_BIN_EXE_criu-victim-tun"),
            &[out.to_str().unwrap(), ready.to_str().unwrap()],
            &dir.path("victim.log"),
            None,
        );
        wait_file(&ready, Duration::from_secs(10));
        let img = dir.path("img");
        let o = compel_criu_tests::criu_dump(v.pid(), &img, &[]);
        assert!(!o.status.success(), "a tap in criu's namespace was dumped");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("/dev/net/tun attached to crtapf0 in criu's own network namespace"),
            "{err}"
        );
        let n = counts(&out);
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            counts(&out) > n,
            "the task does not run on after the refusal"
        );
        drop(v);
    });
}
