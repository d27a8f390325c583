//! A dump never writes through a symlink planted in the images directory: whoever can write
//! that directory (a client of the service names one it can write) could otherwise have
//! root's criu overwrite any file with image bytes. Every file criu creates there is opened
//! with `O_NOFOLLOW`: the dump fails naming the file, the link's target is untouched, and the
//! process is left running.

use std::path::Path;
use std::time::Duration;

use compel_criu_tests::{Spawned, become_subreaper, criu_dump, test_lock, wait_file};

const COUNTER: &str = env!("CARGO_BIN_EXE_criu-victim-counter");

/// The counter in `d` counts on.
fn counting_on(d: &Path) -> bool {
    let n = || {
        std::fs::read_to_string(d.join("count"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let before = n();
    std::thread::sleep(Duration::from_millis(200));
    n() > before + 5
}

#[test]
fn a_dump_does_not_write_through_symlinks_in_the_images_dir() {
    let _g = test_lock();
    become_subreaper();
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let (out, ready, log) = (d.join("count"), d.join("ready"), d.join("victim.log"));
    std::fs::File::create(&log).unwrap();
    let v = Spawned::spawn(
        COUNTER,
        &[out.to_str().unwrap(), ready.to_str().unwrap()],
        &log,
        None,
    );
    wait_file(&ready, Duration::from_secs(10));
    let pid = v.pid();
    // Each name a dump writes first (the marker, then the images), in turn a link to a file
    // outside: the dump must fail on it and leave the target as it was.
    for name in [
        "criu-dump-incomplete".to_string(),
        "inventory.img".to_string(),
        "pstree.img".to_string(),
        format!("core-{pid}.img"),
        format!("mm-{pid}.img"),
        "pages-1.img".to_string(),
    ] {
        let img = d.join(format!("img-{name}"));
        std::fs::create_dir(&img).unwrap();
        let target = d.join(format!("precious-{name}"));
        std::fs::write(&target, "precious\n").unwrap();
        std::os::unix::fs::symlink(&target, img.join(&name)).unwrap();
        let o = criu_dump(pid, &img, &["--leave-running"]);
        let target_now = std::fs::read_to_string(&target).unwrap();
        assert_eq!(target_now, "precious\n", "{name}: written through the link");
        // A link left in place stopped the dump, which named it; the dump may also remove
        // a name before it writes it (inventory.img), so the link is gone, not followed.
        let err = String::from_utf8_lossy(&o.stderr);
        let still_link =
            std::fs::symlink_metadata(img.join(&name)).is_ok_and(|m| m.file_type().is_symlink());
        if still_link {
            assert!(
                !o.status.success(),
                "{name}: the dump went on past the link"
            );
            assert!(err.contains(&name), "{name}: {err}");
        }
        assert!(counting_on(d), "{name}: the counter stopped");
    }
    drop(v);
}
