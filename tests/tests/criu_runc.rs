//! The real client: runc (Debian's `runc`, a busybox root from `busybox-static`) checkpoints
//! and restores a container with this criu (`runc --criu PATH`). The container counts into a
//! file of its root; after `runc checkpoint` and `runc restore -d` the count carries on, `runc
//! state` says running, and a second checkpoint and restore of the restored container works
//! too. runc's default mounts: proc, a tmpfs /dev with devpts, shm and mqueue, a read-only
//! sysfs with the cgroup hierarchies bound in, masked and read-only paths. One container has
//! every namespace of runc's default spec (pid, mount, network, uts, ipc), one all of them but
//! pid (the init keeps its pid). runc's state lives under the test's temporary directory; the
//! container, its cgroups and mounts are deleted whatever happens.

use compel_criu_tests::runc::{Container, runc_usable, twice};
use compel_criu_tests::{become_subreaper, test_lock};

#[test]
fn runc_checkpoint_and_restore_with_this_criu_twice() {
    if !runc_usable() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    twice(Container::counter(Some(&[
        "mount", "network", "uts", "ipc",
    ])));
}

/// runc's default spec: the container's init is pid 1 of a pid namespace of its own, which
/// comes back as pid 1 of a new one (runc finds it through criu's post-restore notification).
#[test]
fn runc_default_namespaces_with_a_pid_namespace_twice() {
    if !runc_usable() {
        return;
    }
    let _g = test_lock();
    become_subreaper();
    let c = Container::counter(None);
    assert!(c.pid_ns, "runc's default spec has a pid namespace");
    twice(c);
}
