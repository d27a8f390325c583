//! Infection end to end: real victims are infected with a parasite, called several times, and
//! cured; then each victim checks itself and exits normally.

use std::time::Duration;

use compel::Task;
use compel::infect::{InfectOptions, Parasite};
use compel_criu_tests::{Exit, Victim, become_subreaper, test_lock};
use parasite_blobs::demo;

const T: Duration = Duration::from_secs(10);

fn fields(line: &str) -> Vec<String> {
    line.split_whitespace().map(str::to_owned).collect()
}

#[test]
fn hello_then_cure_leaves_victim_working() {
    let _g = test_lock();
    become_subreaper();
    let dir = tempfile::tempdir().unwrap();
    let mut v = Victim::spawn(
        env!("CARGO_BIN_EXE_victim-infect-state"),
        &[dir.path().to_str().unwrap()],
    )
    .unwrap();
    let ready = fields(&v.expect_line("ready", T).unwrap());
    let pid: i32 = ready[1].parse().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    {
        let mut task = Task::seize(pid).unwrap();
        let mut p = Parasite::infect(&mut task, &demo::blob(), InfectOptions::default()).unwrap();
        for _ in 0..3 {
            let r: demo::proto::HelloReply = p.call_with(demo::proto::CMD_HELLO, &0u64).unwrap();
            assert_eq!(r.pid, pid);
            let cwd = std::str::from_utf8(&r.cwd[..r.cwd_len as usize]).unwrap();
            assert_eq!(cwd, dir.path().canonicalize().unwrap().to_str().unwrap());
        }
        p.cure().unwrap();
        task.detach().unwrap();
    }
    v.write_stdin(b"check\n").unwrap();
    let line = v.read_line(T).unwrap();
    assert!(line.starts_with("ok check"), "{line}");
    v.write_stdin(b"quit\n").unwrap();
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

#[test]
fn zz_debug_trace() {
    let _ = tracing_subscriber::fmt().with_max_level(tracing::Level::DEBUG).with_test_writer().try_init();
    hello_then_cure_leaves_victim_working();
}
