//! compel's ptrace queries and hand-overs on a real victim (victim-ptrace-state): rseq
//! configuration, queued signals per thread and process-wide, seccomp filters and their flags,
//! syscall stop information, the signal mask; taking over a task some other code seized; a
//! syscall run from syscall stop to syscall stop through a known `syscall` instruction.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use compel::ptrace::{self, SigQueue, SyscallInfo, options};
use compel::syscall_stop::SyscallRun;
use compel::{RemoteAddr, Resume, SeizeOptions, Task};
use compel_criu_tests::{
    Exit, Victim, become_subreaper, is_root, skip_unless, test_lock, wait_state,
};

const T: Duration = Duration::from_secs(10);

/// Spawns the victim (with `args`), returns it, its pid and its rseq area (0 if none), once it
/// sleeps in `read`.
fn spawn(args: &[&str]) -> (Victim, i32, u64) {
    let mut v = Victim::spawn(env!("CARGO_BIN_EXE_victim-ptrace-state"), args).unwrap();
    let line = v.expect_line("ready", T).unwrap();
    let f: Vec<&str> = line.split(' ').collect();
    let pid: i32 = f[1].parse().unwrap();
    let rseq = u64::from_str_radix(f[2], 16).unwrap();
    wait_state(pid, "S", T);
    (v, pid, rseq)
}

/// The victim still answers and exits normally.
fn still_fine(mut v: Victim) {
    v.write_stdin(b"again\n").unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got again"));
    v.close_stdin();
    assert_eq!(v.wait(T), Some(Exit::Code(0)));
}

fn signo(si: &[u8; ptrace::SIGINFO_SIZE]) -> i32 {
    i32::from_ne_bytes(si[..4].try_into().unwrap())
}

#[test]
fn rseq_queued_signals_and_sigmask() {
    let _g = test_lock();
    become_subreaper();
    let (v, pid, rseq) = spawn(&[]);
    // One signal for the thread, two for the process (blocked: they stay queued).
    ptrace::tgkill(pid, pid, libc::SIGUSR1).unwrap();
    for _ in 0..2 {
        // SAFETY: kill sends a signal to our own child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR2) }, 0);
    }
    let mut task = Task::seize(pid).unwrap();
    let conf = ptrace::rseq_configuration(pid).unwrap();
    if rseq == 0 {
        assert_eq!(conf, None);
    } else {
        let conf = conf.expect("glibc registered rseq");
        assert_eq!(conf.abi_pointer, rseq);
        assert!(conf.abi_size >= 32, "{conf:?}");
        assert_eq!(conf.signature, 0x5305_3053, "glibc's rseq signature");
    }
    let own = ptrace::peek_siginfo(pid, SigQueue::Thread).unwrap();
    assert_eq!(own.iter().map(signo).collect::<Vec<_>>(), [libc::SIGUSR1]);
    // A non-realtime signal is queued once however often it is sent.
    let shared = ptrace::peek_siginfo(pid, SigQueue::Shared).unwrap();
    assert_eq!(
        shared.iter().map(signo).collect::<Vec<_>>(),
        [libc::SIGUSR2]
    );
    let blocked = (1u64 << (libc::SIGUSR1 - 1)) | (1u64 << (libc::SIGUSR2 - 1));
    assert_eq!(task.sigmask(pid).unwrap() & blocked, blocked);
    // Peeking dequeued nothing.
    assert_eq!(
        ptrace::peek_siginfo(pid, SigQueue::Thread).unwrap().len(),
        1
    );
    // No seccomp filter here: the kernel says so.
    assert!(ptrace::seccomp_filters(pid).is_err());
    task.detach().unwrap();
    still_fine(v);
}

#[test]
fn seccomp_filters_and_their_flags() {
    let _g = test_lock();
    skip_unless!(is_root(), "reading seccomp filters needs CAP_SYS_ADMIN");
    become_subreaper();
    let (v, pid, _) = spawn(&["seccomp"]);
    let task = Task::seize(pid).unwrap();
    let filters = ptrace::seccomp_filters(pid).unwrap();
    assert_eq!(filters.len(), 1, "{filters:?}");
    assert_eq!(
        filters[0].prog,
        [0x06, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x7f]
    );
    assert_eq!(filters[0].flags, 2, "SECCOMP_FILTER_FLAG_LOG");
    assert_eq!(
        ptrace::seccomp_filter(pid, 1),
        Err(nix::errno::Errno::ENOENT)
    );
    task.detach().unwrap();
    still_fine(v);
}

#[test]
fn syscall_stops_say_what_runs() {
    let _g = test_lock();
    become_subreaper();
    let (mut v, pid, _) = spawn(&[]);
    // Syscall stops can be told apart (and described) only with TRACESYSGOOD.
    let opts = options::TRACESYSGOOD | options::EXITKILL;
    seize_raw(pid, opts);
    let mut task = Task::adopt(pid, &[pid], opts, SeizeOptions::default()).unwrap();
    assert_eq!(ptrace::syscall_info(pid).unwrap(), SyscallInfo::None);
    task.resume(pid, Resume::Syscall).unwrap();
    v.write_stdin(b"hello\n").unwrap();
    // The read the victim sleeps in (restarted after our interrupt: an entry stop first)
    // returns the line.
    let mut seen = Vec::new();
    loop {
        let stop = task.wait_stop(pid).unwrap();
        let info = ptrace::syscall_info(pid).unwrap();
        seen.push((stop, info));
        if let SyscallInfo::Exit { .. } = info {
            break;
        }
        assert!(seen.len() < 4, "{seen:?}");
        task.resume(pid, Resume::Syscall).unwrap();
    }
    assert_eq!(
        seen.last().unwrap().1,
        SyscallInfo::Exit {
            rval: 6,
            is_error: false
        },
        "{seen:?}"
    );
    for (stop, info) in &seen[..seen.len() - 1] {
        assert!(
            matches!(info, SyscallInfo::Entry { nr: 0, .. } | SyscallInfo::None),
            "{stop:?} {info:?}"
        );
    }
    // Then it writes its answer.
    task.resume(pid, Resume::Syscall).unwrap();
    task.wait_stop(pid).unwrap();
    match ptrace::syscall_info(pid).unwrap() {
        SyscallInfo::Entry { nr, args } => {
            assert_eq!(nr, compel_arch::nr::WRITE as u64);
            assert_eq!(
                (args[0], args[2]),
                (1, 10),
                "write(1, \"got hello\\n\", 10)"
            );
        }
        other => panic!("{other:?}"),
    }
    task.detach().unwrap();
    assert_eq!(v.read_line(T).as_deref(), Some("got hello"));
    still_fine(v);
}

/// Seizes `pid` the way a restore engine does (with its own options) and waits for the stop.
fn seize_raw(pid: i32, opts: u64) {
    ptrace::seize(pid, opts).unwrap();
    ptrace::interrupt(pid).unwrap();
    assert!(matches!(
        ptrace::wait(pid).unwrap(),
        ptrace::Stop::Interrupt
    ));
}

#[test]
fn a_task_seized_elsewhere_is_taken_over() {
    let _g = test_lock();
    become_subreaper();
    let (v, pid, _) = spawn(&[]);
    seize_raw(pid, options::EXITKILL);
    assert!(matches!(
        Task::adopt(pid + 100_000, &[pid + 100_000], 0, SeizeOptions::default()),
        Err(compel::TaskError::NoSuchTask { .. })
    ));
    let opts = options::TRACESYSGOOD | options::EXITKILL | options::TRACECLONE;
    let mut task = Task::adopt(pid, &[pid], opts, SeizeOptions::default()).unwrap();
    assert_eq!(task.threads(), vec![pid]);
    assert_eq!(
        task.remote_syscall(compel_arch::nr::GETPID, [0; 6])
            .unwrap(),
        i64::from(pid)
    );
    // TRACESYSGOOD is on (the seizer set only EXITKILL): the restarted read's entry stop
    // reports as a syscall stop, not as a SIGTRAP.
    task.resume(pid, Resume::Syscall).unwrap();
    assert_eq!(task.wait_stop(pid).unwrap(), ptrace::Stop::Syscall);
    task.detach().unwrap();
    still_fine(v);
}

#[test]
fn a_syscall_run_between_syscall_stops() {
    let _g = test_lock();
    become_subreaper();
    let (v, pid, _) = spawn(&[]);
    seize_raw(pid, options::TRACESYSGOOD | options::EXITKILL);
    // The vDSO's syscall instruction, found by decoding the victim's vDSO.
    let base = compel::proc::auxv_vdso(pid).unwrap().unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    let mut img = vec![0u8; 64 * 1024];
    let n = mem.read_at(&mut img, base.0).unwrap();
    let len = compel::vdso::image_len(&img[..n]).unwrap();
    let off = compel::vdso::syscall_offset(&img[..len]).unwrap();
    let insn = base.offset(off as u64);
    let regs = ptrace::get_regs(pid).unwrap();
    let mask = ptrace::get_sigmask(pid).unwrap();
    let mut run = SyscallRun::start(pid, insn, compel_arch::nr::GETPID, [0; 6]).unwrap();
    run.enter().unwrap();
    assert_eq!(run.finish().unwrap(), i64::from(pid));
    let run = SyscallRun::start(pid, insn, compel_arch::nr::CLOSE, [9999, 0, 0, 0, 0, 0]).unwrap();
    assert_eq!(run.finish().unwrap(), -i64::from(libc::EBADF));
    // Registers and mask are back as they were.
    assert_eq!(ptrace::get_regs(pid).unwrap(), regs);
    assert_eq!(ptrace::get_sigmask(pid).unwrap(), mask);
    // Not a syscall instruction: Task refuses it.
    let mut task = Task::adopt(pid, &[pid], options::EXITKILL, SeizeOptions::default()).unwrap();
    assert!(task.use_syscall_insn(RemoteAddr(insn.0 + 1)).is_err());
    task.use_syscall_insn(insn).unwrap();
    assert_eq!(
        task.remote_syscall(compel_arch::nr::GETPID, [0; 6])
            .unwrap(),
        i64::from(pid)
    );
    task.detach().unwrap();
    still_fine(v);
}
