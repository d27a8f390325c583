//! sock_diag is asked once per socket family and dump, never once per socket: a tree of two
//! processes holding 640 unix sockets, netlink and packet sockets is dumped at `-v4`, whose
//! log has one `sock_diag dump` line per request; the restored victim checks every pair, a
//! netlink socket never bound, one whose unread answer was dropped (said at `-v3`) and an
//! obsolete `SOCK_PACKET` socket.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{
    Spawned, ask_check, become_subreaper, children_of, dump_and_reap, restore_detached,
    skip_if_not_root, spawn_ready_with, test_lock,
};

const PAIRS: usize = 300;

/// The `sock_diag dump` lines of `log` for `family`, with the socket count each reported.
fn diag_dumps(log: &str, family: &str) -> Vec<usize> {
    log.lines()
        .filter(|l| l.contains("sock_diag dump"))
        .filter(|l| {
            l.contains(&format!("family=\"{family}\"")) || l.contains(&format!("family={family} "))
        })
        .map(|l| {
            let n = l.split("sockets=").nth(1).unwrap_or_else(|| panic!("{l}"));
            n.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| panic!("{l}"))
        })
        .collect()
}

#[test]
fn sock_diag_is_one_dump_per_family_for_hundreds_of_sockets() {
    skip_if_not_root!("sock_diag_is_one_dump_per_family_for_hundreds_of_sockets");
    let _g = test_lock();
    become_subreaper();
    let d = tempfile::tempdir().unwrap();
    let mut v = spawn_ready_with(
        env!("CARGO_BIN_EXE_criu-victim-sock-many"),
        d.path(),
        &[],
        &[&PAIRS.to_string()],
    );
    let pid = v.pid();
    let mut kid = None;
    for _ in 0..500 {
        if let Some(&k) = children_of(pid).first() {
            kid = Some(k);
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut k = Spawned::guard(kid.expect("the victim's child"));
    let img = d.path().join("img");
    dump_and_reap(&mut v, &img, &[]);
    assert!(k.wait(Duration::from_secs(5)).is_some(), "the child lives");

    let log = std::fs::read_to_string(img.join("dump.log")).unwrap();
    let unix = diag_dumps(&log, "unix");
    assert_eq!(unix.len(), 1, "unix sock_diag dumps: {unix:?}");
    assert!(
        unix[0] >= 2 * PAIRS + 40,
        "the one unix dump listed {} sockets",
        unix[0]
    );
    assert_eq!(diag_dumps(&log, "netlink").len(), 1, "netlink dumps");
    assert_eq!(diag_dumps(&log, "packet").len(), 1, "packet dumps");
    // The netlink socket with an unread answer: dropped, as CRIU does, and said (at -v3).
    assert!(
        log.lines()
            .any(|l| l.contains(" INFO ") && l.contains("receive queue are dropped")),
        "no -v3 line about the dropped netlink queue"
    );

    restored_checks(&img, d.path(), pid, k.pid());
}

fn restored_checks(img: &Path, d: &Path, pid: i32, kid: i32) {
    let r = restore_detached(img, &[]);
    assert_eq!(r, pid);
    let rv = Spawned::guard(r);
    let _rk = Spawned::guard(kid);
    assert_eq!(ask_check(rv.pid(), &d.join("out")), "check ok");
}
