//! A counter in a network namespace of its own: loopback up with an extra address, a veth
//! whose outer end is in the test's namespace, an address and a route on it, a per-device and
//! a namespace-wide sysctl, and netfilter rules (nft, and iptables where installed). `criu
//! dump` saves it; `criu restore --external veth[INNER]:OUTER` makes it again: links, flags,
//! addresses, routes, sysctls and rules read the same, the outer end is back, the count
//! carries on. A veth without its outer end named is refused before anything is made, and
//! nothing is left behind. `--empty-ns net` makes only the namespace.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, become_subreaper, criu, dump_and_reap, is_root, restore_detached, test_lock, wait_file,
};

const OUTER: &str = "crmn0";
const INNER: &str = "crmn1";

/// Deletes the outer end (and with it the pair) when the test ends, however it ends.
struct LinkGuard;

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", OUTER])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn spawn_in_netns(d: &Path) -> Spawned {
    let out = d.join("out");
    let ready = d.join("ready");
    let me = std::process::id().to_string();
    let mut script = format!(
        "set -e
ip link set lo up
ip addr add 10.99.0.1/32 dev lo
ip link add {INNER} type veth peer name {OUTER} netns {me}
ip link set {INNER} mtu 1400
ip addr add 10.98.0.2/24 dev {INNER}
ip link set {INNER} up
ip route add 10.97.0.0/16 via 10.98.0.1
echo 1 > /proc/sys/net/ipv4/conf/{INNER}/forwarding
echo 1 > /proc/sys/net/ipv4/conf/all/log_martians
"
    );
    if have("nft") {
        script.push_str(
            "nft add table inet crmn
nft add chain inet crmn input '{ type filter hook input priority 0; }'
nft add rule inet crmn input tcp dport 4242 drop
",
        );
    }
    if have("iptables-legacy") {
        script.push_str("iptables-legacy -A INPUT -p tcp --dport 4343 -j DROP\n");
    }
    script.push_str(&format!(
        "exec {} {} {}\n",
        env!("CARGO_BIN_EXE_criu-victim-counter"),
        out.display(),
        ready.display()
    ));
    let v = Spawned::spawn(
        "/usr/bin/unshare",
        &["-n", "sh", "-c", &script],
        &d.join("victim.log"),
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    // The outer end up too: routes over a link without carrier are saved as `linkdown`, which
    // the kernel does not take back.
    assert!(
        Command::new("ip")
            .args(["link", "set", OUTER, "up"])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(100));
    v
}

/// What `CMD` prints inside the network namespace of `pid`.
fn inside(pid: i32, cmd: &[&str]) -> String {
    let t = pid.to_string();
    let o = Command::new("nsenter")
        .args(["-t", &t, "-n"])
        .args(cmd)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The namespace's state, modulo what a fresh namespace renumbers.
fn state(pid: i32) -> Vec<String> {
    let mut v = vec![
        inside(pid, &["ip", "-o", "-4", "addr", "show"]),
        inside(pid, &["ip", "route", "show"]),
        inside(
            pid,
            &[
                "cat",
                &format!("/proc/sys/net/ipv4/conf/{INNER}/forwarding"),
            ],
        ),
        inside(pid, &["cat", "/proc/sys/net/ipv4/conf/all/log_martians"]),
    ];
    let links = inside(pid, &["ip", "-o", "link", "show"]);
    // ifindexes and the peer's index may change.
    v.extend(links.lines().map(|l| {
        let l = l.split_once(": ").map_or(l, |x| x.1);
        l.split_whitespace()
            .filter(|w| !w.starts_with("link-netns") && !w.starts_with("link-netnsid"))
            .map(|w| w.split('@').next().unwrap_or(w).to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }));
    if have("nft") {
        v.push(inside(pid, &["nft", "list", "table", "inet", "crmn"]));
    }
    if have("iptables-legacy") {
        v.push(inside(pid, &["iptables-legacy", "-S", "INPUT"]));
    }
    v
}

fn counted(d: &Path) -> usize {
    std::fs::read_to_string(d.join("out"))
        .unwrap()
        .lines()
        .count()
}

#[test]
fn network_namespace_with_a_veth_round_trips() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let _links = LinkGuard;
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_in_netns(d.path());
    let want = state(v.pid());
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    for name in ["netns-", "netdev-", "ifaddr-", "route-"] {
        assert!(
            std::fs::read_dir(&img).unwrap().any(|e| e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(name)),
            "no {name}*.img"
        );
    }
    // The pair went with the namespace.
    std::thread::sleep(Duration::from_millis(200));
    let gone = Command::new("ip")
        .args(["link", "show", OUTER])
        .output()
        .unwrap();
    assert!(
        !gone.status.success(),
        "the outer end outlived its namespace"
    );

    // Without the outer end named: refused before anything is made.
    let o = criu(&["restore", "-D", img.to_str().unwrap(), "-d", "-o", "r0.log"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("--external veth[{INNER}]:OUTER")),
        "{err}"
    );

    let at_dump = counted(d.path());
    let ext = format!("veth[{INNER}]:{OUTER}");
    let pid = restore_detached(&img, &["--external", &ext]);
    let r = Spawned::guard(pid);
    std::thread::sleep(Duration::from_millis(300));
    assert!(counted(d.path()) > at_dump + 10, "the count did not go on");
    assert_eq!(state(pid), want, "the namespace differs");
    let outer = Command::new("ip")
        .args(["-o", "link", "show", OUTER])
        .output()
        .unwrap();
    assert!(outer.status.success(), "no outer end after the restore");
    drop(r);
}

#[test]
fn empty_ns_makes_only_the_namespace() {
    if !is_root() {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let _links = LinkGuard;
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_in_netns(d.path());
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    let pid = restore_detached(&img, &["--empty-ns", "net"]);
    let _r = Spawned::guard(pid);
    let links = inside(pid, &["ip", "-o", "link", "show"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    let mine = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
        mine
    );
}
