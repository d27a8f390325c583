//! runc's checkpoint options with this criu: `--leave-running` (the container runs on after
//! the checkpoint; killed and deleted, it comes back from the images where it was then) and
//! `--tcp-established` (a TCP connection inside the container's network namespace carries on
//! after the restore). Containers have runc's default namespaces (pid, mount, network, uts,
//! ipc) and are deleted whatever happens.

use compel_criu_tests::runc::{Container, assert_unbroken, runc_usable, wait_counting};
use compel_criu_tests::{become_subreaper, test_lock};

/// Checkpointed with `--leave-running`, the container counts on without a pause; killed and
/// restored from the images, it counts on from the number it had at the checkpoint.
fn leave_running(c: Container) {
    c.run();
    let (_, pid) = c.state();
    let before = c.counts().len() as u64;
    c.checkpoint(0, &["--leave-running"]);
    let (status, still) = c.state();
    assert_eq!(status, "running", "after checkpoint --leave-running");
    assert_eq!(still, pid, "the container's init changed");
    let after = c.counts().len();
    wait_counting(&c, after);
    assert_unbroken(&c);
    c.kill_and_delete();
    let reached = c.counts().len() as u64;
    c.restore(0, pid, &[]);
    wait_counting(&c, reached as usize);
    // 1..=reached from the first run, then the restored count from where the images had it:
    // a number between the count before the checkpoint and the one runc returned at.
    let n = c.counts();
    let restart = n
        .windows(2)
        .position(|w| w[1] != w[0] + 1)
        .map(|i| i + 1)
        .expect("the restored container counts again from its checkpoint");
    assert_eq!(restart as u64, reached, "the first run's count is broken");
    let from = n[restart];
    assert!(
        from > before && from <= after as u64 + 1,
        "the restored count starts at {from}, not between {before} and {after}"
    );
    for (i, w) in n[restart..].windows(2).enumerate() {
        assert_eq!(
            w[1],
            w[0] + 1,
            "the restored count is broken at {}",
            restart + i
        );
    }
}

#[test]
fn runc_checkpoint_leave_running_then_restore() {
    if !runc_usable() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    leave_running(Container::counter(None));
}

/// Without a pid namespace the restored init gets its old pid back after the original was
/// killed.
#[test]
fn runc_checkpoint_leave_running_without_a_pid_namespace() {
    if !runc_usable() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    leave_running(Container::counter(Some(&[
        "mount", "network", "uts", "ipc",
    ])));
}

/// The count sent through a TCP connection over the container's loopback and written into
/// /count by the server. The server's stdin never ends (an EOF there would close the
/// connection).
const TCP_COUNTER: &str = "sleep 100000 | nc -l -p 5000 > /count & sleep 0.3; \
    i=0; while :; do i=$((i+1)); echo $i; sleep 0.02; done | nc 127.0.0.1 5000";

/// A server and a client in the container, connected over its loopback: the client sends the
/// count through the connection, the server writes what it receives into /count. Checkpointed
/// and restored with `--tcp-established` twice, the connection carries on and no number is
/// lost or repeated.
#[test]
fn runc_tcp_established_connection_carries_on() {
    if !runc_usable() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let c = Container::new(None, TCP_COUNTER, &["nc"], |_| {});
    c.run();
    for round in 0..2 {
        c.round_trip(round, &["--tcp-established"], &["--tcp-established"]);
    }
}

/// Without `--tcp-established` the checkpoint of a container with a connection fails, and the
/// container runs on, counting.
#[test]
fn runc_checkpoint_refuses_a_connection_without_tcp_established() {
    if !runc_usable() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let c = Container::new(None, TCP_COUNTER, &["nc"], |_| {});
    c.run();
    let (img, work, _) = c.round_dirs(0);
    let o = c.runc(&[
        "checkpoint",
        "--image-path",
        img.to_str().unwrap(),
        "--work-path",
        work.to_str().unwrap(),
        &c.id,
    ]);
    assert!(
        !o.status.success(),
        "checkpoint succeeded with an open connection"
    );
    let log = std::fs::read_to_string(work.join("dump.log")).unwrap_or_default();
    assert!(
        log.contains("tcp-established"),
        "criu's log does not say why: {log}"
    );
    let (status, _) = c.state();
    assert_eq!(status, "running");
    let n = c.counts().len();
    wait_counting(&c, n);
    assert_unbroken(&c);
}
