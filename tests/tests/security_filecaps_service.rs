//! A criu carrying file capabilities (`setcap cap_sys_admin,cap_sys_ptrace+ep`, the other way
//! to install it with more privilege than its user; `security_setuid_service.rs` covers the
//! setuid bit) does not serve RPC for the user who runs it: the kernel starts it with
//! `AT_SECURE`, and `criu swrk` and `criu service` refuse at once, naming the reason. The same
//! copy with its capabilities removed goes on for that user (to its usual complaint about the
//! descriptor).

use std::process::{Command, Stdio};

use compel_criu_tests::{code_and_stderr, command_as_user, criu_bin, is_root, open_dir};

const NOBODY: u32 = 65534;

fn setcap(args: &[&str]) -> bool {
    Command::new("setcap")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn criu_with_file_capabilities_refuses_swrk_and_service_for_other_users() {
    if !is_root() {
        eprintln!("skipped: needs root (to give a copy file capabilities)");
        return;
    }
    let d = open_dir();
    let bin = d.path().join("criu");
    std::fs::copy(criu_bin(), &bin).unwrap();
    let b = bin.to_str().unwrap();
    if !setcap(&["cap_sys_admin,cap_sys_ptrace+ep", b]) {
        eprintln!("skipped: setcap failed (no setcap, or no xattrs on this filesystem)");
        return;
    }
    let nobody = |args: &[&str]| {
        let mut c = command_as_user(&bin, NOBODY, NOBODY);
        c.env("HOME", d.path()).current_dir(d.path()).args(args);
        code_and_stderr(c)
    };
    let (code, err) = nobody(&["swrk", "0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("swrk: refusing to run setuid or with file capabilities for uid 65534"),
        "{err}"
    );
    let addr = d.path().join("sk");
    let (code, err) = nobody(&["service", "--address", addr.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("service: refusing to run setuid or with file capabilities"),
        "{err}"
    );
    assert!(!addr.exists(), "the service socket was made");

    // The capabilities removed: nobody gets the usual complaint.
    assert!(setcap(&["-r", b]), "setcap -r");
    let (code, err) = nobody(&["swrk", "0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("is not a SOCK_SEQPACKET socket"), "{err}");
}
