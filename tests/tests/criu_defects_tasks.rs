//! criu dump + restore of task and memory state that used to come back different (issue 20,
//! items 18..30): each test has `criu-victim-defects-tasks` set the state up, dumps it (which
//! kills it), restores it detached and has the restored task check itself from the inside.
//!
//! Every test runs as root, under the test lock and as a child subreaper.

use std::time::Duration;

use compel_criu_tests::{
    Scratch, Spawned, ask_check, become_subreaper, criu_dump, dump_and_reap, restore_detached,
    skip_if_not_root, test_lock,
};

const VICTIM: &str = env!("CARGO_BIN_EXE_criu-victim-defects-tasks");

/// Starts the victim with `modes`, waits until it is ready, lets it run `settle`, dumps it,
/// restores it detached and returns its verdict about itself.
fn round_trip(modes: &[&str], settle: Duration) -> String {
    let dir = Scratch::new();
    let mut args = vec![dir.ready.to_str().unwrap()];
    args.extend_from_slice(modes);
    let (mut v, _) = dir.spawn_victim(VICTIM, &args, None, Duration::from_secs(10));
    std::thread::sleep(settle);
    dump_and_reap(&mut v, &dir.img, &[]);
    let pid = restore_detached(&dir.img, &[]);
    let _task = Spawned::guard(pid);
    ask_check(pid, &dir.ready.with_extension("2"))
        .trim()
        .to_string()
}

/// Item 26: the audit login uid comes back.
#[test]
fn loginuid_comes_back() {
    skip_if_not_root!("loginuid_comes_back");
    if !std::path::Path::new("/proc/self/loginuid").exists() {
        eprintln!("skipped: no audit login uids in this kernel");
        return;
    }
    let _g = test_lock();
    become_subreaper();
    assert_eq!(round_trip(&["loginuid"], Duration::ZERO), "check ok");
}

/// Item 27: `SCHED_RESET_ON_FORK` (not shown in `/proc/PID/stat`) comes back with the policy.
#[test]
fn sched_reset_on_fork_comes_back() {
    skip_if_not_root!("sched_reset_on_fork_comes_back");
    let _g = test_lock();
    become_subreaper();
    assert_eq!(round_trip(&["sched"], Duration::ZERO), "check ok");
}

/// Item 21: `mlock`ed and `MAP_LOCKED` memory comes back locked, with its contents.
#[test]
fn locked_memory_comes_back_locked() {
    skip_if_not_root!("locked_memory_comes_back_locked");
    let _g = test_lock();
    become_subreaper();
    assert_eq!(round_trip(&["mlock"], Duration::ZERO), "check ok");
}

/// Item 24: a read-only `MAP_SHARED` mapping of a file opened `O_RDWR` can be made writable
/// after the restore (the file is reopened with its own open mode, not the protection's).
#[test]
fn read_only_shared_mapping_of_a_read_write_file_can_be_made_writable() {
    skip_if_not_root!("read_only_shared_mapping_of_a_read_write_file_can_be_made_writable");
    let _g = test_lock();
    become_subreaper();
    assert_eq!(round_trip(&["shared-rw"], Duration::ZERO), "check ok");
}

/// Item 18: a `SIGEV_THREAD` POSIX timer (glibc points it at its helper thread with
/// `SIGEV_THREAD_ID`) comes back and keeps running its function.
#[test]
fn sigev_thread_posix_timer_keeps_firing() {
    skip_if_not_root!("sigev_thread_posix_timer_keeps_firing");
    let _g = test_lock();
    become_subreaper();
    assert_eq!(
        round_trip(&["posix-timer-thread"], Duration::from_millis(50)),
        "check ok"
    );
}

/// Item 25: `membarrier` registrations (private expedited, sync-core) come back.
#[test]
fn membarrier_registrations_come_back() {
    skip_if_not_root!("membarrier_registrations_come_back");
    let _g = test_lock();
    become_subreaper();
    assert_eq!(round_trip(&["membarrier"], Duration::ZERO), "check ok");
}

/// Item 23: guard regions (`MADV_GUARD_INSTALL`) come back: their pages fault, the pages
/// around them keep their contents.
#[test]
fn guard_regions_come_back() {
    skip_if_not_root!("guard_regions_come_back");
    let _g = test_lock();
    become_subreaper();
    assert_eq!(round_trip(&["guard"], Duration::ZERO), "check ok");
}

/// Item 22: `MAP_DROPPABLE` memory comes back droppable, without the old contents (as after
/// the kernel dropped them, which it may do at any time).
#[test]
fn droppable_memory_comes_back_droppable() {
    skip_if_not_root!("droppable_memory_comes_back_droppable");
    let _g = test_lock();
    become_subreaper();
    assert_eq!(round_trip(&["droppable"], Duration::ZERO), "check ok");
}

/// Item 30: a thread caught inside an rseq critical section restarts at the section's abort
/// handler (as the kernel would have done), so the section works on after the restore.
#[test]
fn thread_inside_rseq_critical_section_restarts_at_abort_handler() {
    skip_if_not_root!("thread_inside_rseq_critical_section_restarts_at_abort_handler");
    let _g = test_lock();
    become_subreaper();
    assert_eq!(round_trip(&["rseq"], Duration::from_millis(50)), "check ok");
}

/// Item 29: `MAP_SHARED | MAP_ANONYMOUS` pages that no process has in its page tables come
/// back (they are taken from the shared object, not from each process's page map).
#[test]
fn shared_anonymous_pages_not_faulted_in_come_back() {
    skip_if_not_root!("shared_anonymous_pages_not_faulted_in_come_back");
    let _g = test_lock();
    become_subreaper();
    assert_eq!(
        round_trip(&["shared-unfaulted"], Duration::ZERO),
        "check ok"
    );
}

/// Item 29, the part not restored: pages of a shared anonymous object outside every mapping
/// of it (a mapping shrunk with `mremap`) make the dump refuse, by name, and the process runs
/// on with its pages.
#[test]
fn shared_anonymous_pages_beyond_every_mapping_are_refused() {
    skip_if_not_root!("shared_anonymous_pages_beyond_every_mapping_are_refused");
    let _g = test_lock();
    become_subreaper();
    let dir = Scratch::new();
    let (v, _) = dir.spawn_victim(
        VICTIM,
        &[dir.ready.to_str().unwrap(), "shared-shrunk"],
        None,
        Duration::from_secs(10),
    );
    let o = criu_dump(v.pid(), &dir.img, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the dump succeeded");
    assert!(err.contains("outside every mapping"), "{err}");
    assert_eq!(
        ask_check(v.pid(), &dir.ready.with_extension("2")).trim(),
        "check ok"
    );
}
