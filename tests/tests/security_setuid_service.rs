//! A criu installed setuid-root (or with file capabilities) does not serve RPC for the user who
//! runs it: `criu swrk` and `criu service` refuse at once, naming the reason, instead of handing
//! root's power to that user. The same binary without the bit, or run by root, goes on (to
//! its usual complaint about the descriptor).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use compel_criu_tests::{code_and_stderr, command_as_user, criu_bin, is_root, open_dir};

const NOBODY: u32 = 65534;

#[test]
fn setuid_criu_refuses_swrk_and_service_for_other_users() {
    if !is_root() {
        eprintln!("skipped: needs root (to make a setuid-root copy)");
        return;
    }
    let d = open_dir();
    let bin = d.path().join("criu");
    std::fs::copy(criu_bin(), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o4755)).unwrap();

    let (code, err) = code_and_stderr({
        let mut c = command_as_user(&bin, NOBODY, NOBODY);
        c.env("HOME", d.path());
        c.args(["swrk", "0"]);
        c
    });
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("swrk: refusing to run setuid or with file capabilities for uid 65534"),
        "{err}"
    );
    let addr = d.path().join("sk");
    let (code, err) = code_and_stderr({
        let mut c = command_as_user(&bin, NOBODY, NOBODY);
        c.env("HOME", d.path());
        c.arg("service")
            .arg("--address")
            .arg(&addr)
            .current_dir(d.path());
        c
    });
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("service: refusing to run setuid"), "{err}");
    assert!(!addr.exists(), "the service socket was made");

    // Root running the setuid copy: nothing is borrowed, the usual checks follow.
    let (code, err) = code_and_stderr({
        let mut c = Command::new(&bin);
        c.args(["swrk", "0"]);
        c
    });
    assert_eq!(code, Some(1));
    assert!(err.contains("is not a SOCK_SEQPACKET socket"), "{err}");

    // Without the bit, nobody gets the usual complaint too.
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, err) = code_and_stderr({
        let mut c = command_as_user(&bin, NOBODY, NOBODY);
        c.env("HOME", d.path());
        c.args(["swrk", "0"]);
        c
    });
    assert_eq!(code, Some(1));
    assert!(err.contains("is not a SOCK_SEQPACKET socket"), "{err}");
}
