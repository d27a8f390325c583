//! Reading a task's state from `/proc/PID`: stat, status, smaps, fds and fdinfo, auxv, limits.
//!
//! Everything here is text (or binary) another process controls in part (its `comm`, its file
//! names), so parsing never panics: a malformed line is a [`ProcError::Parse`] naming the file.
// sched_getattr has no libc wrapper: it is called through libc::syscall.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};

pub use compel::proc::Mapping;

/// Errors reading `/proc`.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// A `/proc` file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `/proc` file has a line criu cannot parse.
    #[error("cannot parse {path}: {what}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
}

impl ProcError {
    /// The errno of the failure: the OS error of a read (`ENOENT`/`ESRCH` for a process that
    /// is gone), `EBADMSG` for a line that does not parse.
    pub fn errno(&self) -> i32 {
        match self {
            ProcError::Read { source, .. } => crate::errno::io(source),
            ProcError::Parse { .. } => libc::EBADMSG,
        }
    }
}

fn proc_path(pid: i32, what: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{what}"))
}

fn read_text(path: &Path) -> Result<String, ProcError> {
    compel::proc::read_text(path).map_err(|source| ProcError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_err(path: &Path, what: impl Into<String>) -> ProcError {
    ProcError::Parse {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// The fields of `/proc/PID/stat` criu needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// `comm` (between the parentheses).
    pub comm: String,
    /// The state letter.
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group.
    pub pgid: i32,
    /// Session.
    pub sid: i32,
    /// The task's `flags` (PF_*).
    pub flags: u32,
    /// Nice value.
    pub nice: i32,
    /// Scheduling policy.
    pub policy: u32,
    /// Real-time priority.
    pub rt_priority: u32,
    /// `start_code`, `end_code`, `start_stack`.
    pub start_code: u64,
    /// End of code.
    pub end_code: u64,
    /// Start of the stack.
    pub start_stack: u64,
    /// Start of data.
    pub start_data: u64,
    /// End of data.
    pub end_data: u64,
    /// Start of the heap.
    pub start_brk: u64,
    /// Argument area.
    pub arg_start: u64,
    /// End of the argument area.
    pub arg_end: u64,
    /// Environment area.
    pub env_start: u64,
    /// End of the environment area.
    pub env_end: u64,
    /// Exit code (for zombies).
    pub exit_code: u32,
}

/// Parses `/proc/PID/stat`.
///
/// # Errors
/// [`ProcError`] if it cannot be read or has too few fields.
pub fn read_stat(pid: i32) -> Result<ProcStat, ProcError> {
    let path = proc_path(pid, "stat");
    let mut st = parse_stat(&path, &read_text(&path)?)?;
    if let Some((policy, prio)) = sched_attr(pid) {
        st.policy = policy;
        st.rt_priority = prio;
    }
    Ok(st)
}

/// `SCHED_RESET_ON_FORK`, as `sched_setscheduler` takes it ORed into the policy (and CRIU
/// saves it in `sched_policy`).
pub const SCHED_RESET_ON_FORK: u32 = 0x4000_0000;

/// The thread's policy (with [`SCHED_RESET_ON_FORK`] ORed in when its flag is set) and
/// real-time priority, from `sched_getattr`: `/proc/PID/stat` does not show the flag.
fn sched_attr(tid: i32) -> Option<(u32, u32)> {
    const SCHED_FLAG_RESET_ON_FORK: u64 = 1;
    // struct sched_attr (SCHED_ATTR_SIZE_VER1): size, policy, flags, nice, priority,
    // runtime, deadline, period, util_min, util_max.
    let mut attr = [0u32; 14];
    // SAFETY: sched_getattr writes at most the given 56 bytes into the local array.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            tid,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr) as u32,
            0u32,
        )
    };
    if r != 0 {
        return None;
    }
    let flags = attr[2] as u64 | ((attr[3] as u64) << 32);
    let reset = if flags & SCHED_FLAG_RESET_ON_FORK != 0 {
        SCHED_RESET_ON_FORK
    } else {
        0
    };
    Some((attr[1] | reset, attr[5]))
}

fn parse_stat(path: &Path, text: &str) -> Result<ProcStat, ProcError> {
    let open = text.find('(').ok_or_else(|| parse_err(path, "no comm"))?;
    let close = text.rfind(')').ok_or_else(|| parse_err(path, "no comm"))?;
    if close < open {
        return Err(parse_err(path, "bad comm"));
    }
    let comm = text[open + 1..close].to_string();
    // Fields after the comm, numbered from 3 (state) as in proc(5).
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let f = |n: usize| -> Result<&str, ProcError> {
        rest.get(n - 3)
            .copied()
            .ok_or_else(|| parse_err(path, format!("no field {n}")))
    };
    let num = |n: usize| -> Result<i64, ProcError> {
        f(n)?
            .parse::<i64>()
            .map_err(|_| parse_err(path, format!("field {n} is not a number")))
    };
    let unum = |n: usize| -> Result<u64, ProcError> {
        f(n)?
            .parse::<u64>()
            .map_err(|_| parse_err(path, format!("field {n} is not a number")))
    };
    Ok(ProcStat {
        comm,
        state: f(3)?.chars().next().unwrap_or('?'),
        ppid: num(4)? as i32,
        pgid: num(5)? as i32,
        sid: num(6)? as i32,
        flags: unum(9)? as u32,
        nice: num(19)? as i32,
        rt_priority: unum(40)? as u32,
        policy: unum(41)? as u32,
        start_code: unum(26)?,
        end_code: unum(27)?,
        start_stack: unum(28)?,
        start_data: unum(45)?,
        end_data: unum(46)?,
        start_brk: unum(47)?,
        arg_start: unum(48)?,
        arg_end: unum(49)?,
        env_start: unum(50)?,
        env_end: unum(51)?,
        exit_code: unum(52)? as u32,
    })
}

/// The fields of `/proc/PID/status` criu needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// Real, effective, saved and filesystem uid.
    pub uids: [u32; 4],
    /// Real, effective, saved and filesystem gid.
    pub gids: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Inheritable capabilities.
    pub cap_inh: u64,
    /// Permitted capabilities.
    pub cap_prm: u64,
    /// Effective capabilities.
    pub cap_eff: u64,
    /// Bounding set.
    pub cap_bnd: u64,
    /// Ambient set.
    pub cap_amb: u64,
    /// Blocked signals.
    pub sig_blk: u64,
    /// Pending (thread) signals.
    pub sig_pnd: u64,
    /// Pending (shared) signals.
    pub shd_pnd: u64,
    /// `NoNewPrivs`.
    pub no_new_privs: bool,
    /// Seccomp mode.
    pub seccomp: u32,
    /// Umask.
    pub umask: u32,
    /// Number of threads.
    pub threads: u32,
    /// `TracerPid`.
    pub tracer: i32,
    /// `Tgid`.
    pub tgid: i32,
}

/// Parses `/proc/PID/status`.
///
/// # Errors
/// [`ProcError`] if it cannot be read or lacks the credential lines.
pub fn read_status(pid: i32) -> Result<ProcStatus, ProcError> {
    let path = proc_path(pid, "status");
    parse_status(&path, &read_text(&path)?)
}

fn parse_status(path: &Path, text: &str) -> Result<ProcStatus, ProcError> {
    let mut st = ProcStatus::default();
    let mut seen = 0;
    let hex =
        |v: &str| u64::from_str_radix(v.trim(), 16).map_err(|_| parse_err(path, v.to_string()));
    for line in text.lines() {
        let Some((key, val)) = line.split_once(':') else {
            continue;
        };
        let val = val.trim();
        let four = |v: &str| -> Result<[u32; 4], ProcError> {
            let n: Vec<u32> = v
                .split_whitespace()
                .map(|x| x.parse::<u32>())
                .collect::<Result<_, _>>()
                .map_err(|_| parse_err(path, format!("{key}: {v}")))?;
            n.try_into()
                .map_err(|_| parse_err(path, format!("{key} has not 4 values")))
        };
        match key {
            "Uid" => {
                st.uids = four(val)?;
                seen |= 1;
            }
            "Gid" => {
                st.gids = four(val)?;
                seen |= 2;
            }
            "Groups" => {
                st.groups = val
                    .split_whitespace()
                    .map(|x| x.parse::<u32>())
                    .collect::<Result<_, _>>()
                    .map_err(|_| parse_err(path, format!("Groups: {val}")))?;
            }
            "CapInh" => st.cap_inh = hex(val)?,
            "CapPrm" => st.cap_prm = hex(val)?,
            "CapEff" => st.cap_eff = hex(val)?,
            "CapBnd" => st.cap_bnd = hex(val)?,
            "CapAmb" => st.cap_amb = hex(val)?,
            "SigBlk" => st.sig_blk = hex(val)?,
            "SigPnd" => st.sig_pnd = hex(val)?,
            "ShdPnd" => st.shd_pnd = hex(val)?,
            "NoNewPrivs" => st.no_new_privs = val == "1",
            "Seccomp" => st.seccomp = val.parse().unwrap_or(0),
            "Umask" => st.umask = u32::from_str_radix(val, 8).unwrap_or(0o022),
            "Threads" => st.threads = val.parse().unwrap_or(1),
            "TracerPid" => st.tracer = val.parse().unwrap_or(0),
            "Tgid" => st.tgid = val.parse().unwrap_or(0),
            _ => {}
        }
    }
    if seen != 3 {
        return Err(parse_err(path, "no Uid/Gid lines"));
    }
    Ok(st)
}

/// Parses `/proc/PID/smaps` (with compel's parser: each area with its `VmFlags`).
///
/// # Errors
/// [`ProcError`] if it cannot be read or a range line is malformed.
pub fn read_smaps(pid: i32) -> Result<Vec<Mapping>, ProcError> {
    let path = proc_path(pid, "smaps");
    compel::proc::parse_smaps(&read_text(&path)?).map_err(|e| parse_err(&path, e.to_string()))
}

/// `/proc/PID/fdinfo/FD`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// File position.
    pub pos: u64,
    /// Open flags (octal in the file), including `O_CLOEXEC` for the descriptor.
    pub flags: u32,
    /// Mount id.
    pub mnt_id: i32,
    /// Inode number.
    pub ino: u64,
    /// The file locks this descriptor holds (its `lock:` lines).
    pub locks: Vec<FdLock>,
}

/// One `lock:` line of an fdinfo file: a lock held through this descriptor (flock and OFD
/// locks: by its open file; POSIX locks: by its process, on its file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FdLock {
    /// `FLOCK`, `POSIX`, `OFDLCK`, `LEASE`, ...
    pub class: String,
    /// `READ`, `WRITE` or `UNLCK`.
    pub kind: String,
    /// The word before the type: `ADVISORY` for locks, a lease's state (`ACTIVE`, `BREAKING`).
    pub mode: String,
    /// First byte.
    pub start: i64,
    /// Last byte, `None` for `EOF` (to the end, whatever it is).
    pub end: Option<i64>,
}

/// Parses what follows `lock:` in fdinfo: `ID: CLASS MODE TYPE PID DEV:INO START END`.
fn parse_fd_lock(v: &str) -> Option<FdLock> {
    let rest = v.split_once(':')?.1;
    let w: Vec<&str> = rest.split_whitespace().collect();
    // LEASEs have a state word between class and type ("LEASE  ACTIVE    READ").
    let [class, mode, kind, _pid, _dev_ino, start, end] = w.as_slice() else {
        return None;
    };
    Some(FdLock {
        class: (*class).to_string(),
        kind: (*kind).to_string(),
        mode: (*mode).to_string(),
        start: start.parse().ok()?,
        end: if *end == "EOF" {
            None
        } else {
            Some(end.parse().ok()?)
        },
    })
}

/// Parses `/proc/PID/fdinfo/FD`.
///
/// # Errors
/// [`ProcError`] if it cannot be read or lacks `pos`/`flags`.
pub fn read_fdinfo(pid: i32, fd: i32) -> Result<FdInfo, ProcError> {
    let path = proc_path(pid, &format!("fdinfo/{fd}"));
    let text = read_text(&path)?;
    let mut info = FdInfo::default();
    let mut seen = 0;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "pos" => {
                info.pos = v.parse().map_err(|_| parse_err(&path, "pos"))?;
                seen |= 1;
            }
            "flags" => {
                info.flags = u32::from_str_radix(v, 8).map_err(|_| parse_err(&path, "flags"))?;
                seen |= 2;
            }
            "mnt_id" => info.mnt_id = v.parse().unwrap_or(0),
            "ino" => info.ino = v.parse().unwrap_or(0),
            "lock" => info.locks.push(parse_fd_lock(v).unwrap_or_else(|| FdLock {
                class: format!("unparsed ({v})"),
                ..FdLock::default()
            })),
            _ => {}
        }
    }
    if seen != 3 {
        return Err(parse_err(&path, "no pos/flags"));
    }
    Ok(info)
}

/// The whole text of `/proc/PID/fdinfo/FD`, for the kind-specific lines (eventfd count, epoll
/// targets, timerfd settings, signalfd mask).
///
/// # Errors
/// [`ProcError::Read`].
pub fn read_fdinfo_text(pid: i32, fd: i32) -> Result<String, ProcError> {
    read_text(&proc_path(pid, &format!("fdinfo/{fd}")))
}

/// The open descriptors of a task, sorted, with their link targets.
///
/// # Errors
/// [`ProcError`] if `/proc/PID/fd` cannot be listed.
pub fn list_fds(pid: i32) -> Result<Vec<(i32, PathBuf)>, ProcError> {
    let dir = proc_path(pid, "fd");
    let rd = std::fs::read_dir(&dir).map_err(|source| ProcError::Read {
        path: dir.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|source| ProcError::Read {
            path: dir.clone(),
            source,
        })?;
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // A descriptor closed since the listing is simply gone (the task is stopped, so this
        // only happens for our own transient descriptors).
        if let Ok(target) = std::fs::read_link(e.path()) {
            out.push((fd, target));
        }
    }
    out.sort_by_key(|(fd, _)| *fd);
    Ok(out)
}

/// `/proc/PID/auxv` as 64-bit words.
///
/// # Errors
/// [`ProcError::Read`].
pub fn read_auxv(pid: i32) -> Result<Vec<u64>, ProcError> {
    let path = proc_path(pid, "auxv");
    let bytes =
        compel::proc::read_file(&path).map_err(|source| ProcError::Read { path, source })?;
    let mut words: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    // Keep the pairs up to (not including) AT_NULL, as CRIU saves them.
    let mut n = 0;
    while n + 1 < words.len() && words[n] != 0 {
        n += 2;
    }
    words.truncate(n);
    Ok(words)
}

/// `/proc/PID/personality`.
///
/// # Errors
/// [`ProcError`].
pub fn read_personality(pid: i32) -> Result<u32, ProcError> {
    let path = proc_path(pid, "personality");
    let t = read_text(&path)?;
    u32::from_str_radix(t.trim(), 16).map_err(|_| parse_err(&path, t.trim().to_string()))
}

/// A small decimal file such as `/proc/PID/loginuid` or `oom_score_adj`.
///
/// # Errors
/// [`ProcError`].
pub fn read_number(pid: i32, what: &str) -> Result<i64, ProcError> {
    let path = proc_path(pid, what);
    let t = read_text(&path)?;
    t.trim()
        .parse()
        .map_err(|_| parse_err(&path, t.trim().to_string()))
}

#[cfg(test)]
/// `/proc/PID/limits` as `(soft, hard)` pairs in `RLIMIT_*` order (`unlimited` is `u64::MAX`).
/// The file is readable by anyone, so this works where `prlimit` on the task would fail with
/// `EPERM` (another uid, no `CAP_SYS_RESOURCE`).
///
/// # Errors
/// [`ProcError`] if a row is malformed or one is missing.
pub fn read_limits(pid: i32) -> Result<Vec<(u64, u64)>, ProcError> {
    let path = proc_path(pid, "limits");
    let text = read_text(&path)?;
    // Row names in RLIMIT_* order.
    const ROWS: [&str; 16] = [
        "Max cpu time",
        "Max file size",
        "Max data size",
        "Max stack size",
        "Max core file size",
        "Max resident set",
        "Max processes",
        "Max open files",
        "Max locked memory",
        "Max address space",
        "Max file locks",
        "Max pending signals",
        "Max msgqueue size",
        "Max nice priority",
        "Max realtime priority",
        "Max realtime timeout",
    ];
    let val = |s: &str| -> Result<u64, ProcError> {
        if s == "unlimited" {
            Ok(u64::MAX)
        } else {
            s.parse()
                .map_err(|_| parse_err(&path, format!("limit {s}")))
        }
    };
    let mut out = Vec::with_capacity(ROWS.len());
    for row in ROWS {
        let line = text
            .lines()
            .find(|l| l.starts_with(row) && l[row.len()..].starts_with("  "))
            .ok_or_else(|| parse_err(&path, format!("no row {row}")))?;
        let mut it = line[row.len()..].split_whitespace();
        let soft = val(it.next().unwrap_or(""))?;
        let hard = val(it.next().unwrap_or(""))?;
        out.push((soft, hard));
    }
    Ok(out)
}

/// `/proc/PID/timers`: the ids, signal, notify mode and clock of each POSIX timer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PosixTimerInfo {
    /// Timer id.
    pub id: i32,
    /// Signal number.
    pub signo: i32,
    /// `sigev_value` as the kernel shows it.
    pub sigev_value: u64,
    /// Notify: `signal`, `thread`, `none` (with `/tid`).
    pub notify: i32,
    /// Thread id for `SIGEV_THREAD_ID`.
    pub notify_thread: i32,
    /// Clock id.
    pub clock_id: i32,
}

/// Parses `/proc/PID/timers` (missing file: no timers).
///
/// # Errors
/// [`ProcError::Parse`] for malformed entries.
pub fn read_posix_timers(pid: i32) -> Result<Vec<PosixTimerInfo>, ProcError> {
    let path = proc_path(pid, "timers");
    let Ok(text) = read_text(&path) else {
        return Ok(Vec::new());
    };
    let mut out: Vec<PosixTimerInfo> = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "ID" => out.push(PosixTimerInfo {
                id: v.parse().map_err(|_| parse_err(&path, "ID"))?,
                ..Default::default()
            }),
            "signal" => {
                if let Some(t) = out.last_mut() {
                    let (sig, val) = v.split_once('/').unwrap_or((v, "0"));
                    t.signo = sig.parse().unwrap_or(0);
                    t.sigev_value =
                        u64::from_str_radix(val.trim_start_matches("0x"), 16).unwrap_or(0);
                }
            }
            "notify" => {
                if let Some(t) = out.last_mut() {
                    let (how, tid) = v.split_once('/').unwrap_or((v, ""));
                    let tid = tid.trim_start_matches("tid.").trim_start_matches("pid.");
                    t.notify_thread = tid.parse().unwrap_or(0);
                    let base = match how {
                        "thread" => libc::SIGEV_THREAD,
                        "none" => libc::SIGEV_NONE,
                        _ => libc::SIGEV_SIGNAL,
                    };
                    t.notify = if tid.is_empty() || v.contains("pid.") {
                        base
                    } else {
                        base | 4 // SIGEV_THREAD_ID
                    };
                }
            }
            "ClockID" => {
                if let Some(t) = out.last_mut() {
                    t.clock_id = v.parse().unwrap_or(0);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
// Unsafe code: the tests compare with what getrlimit says directly.
#[allow(unsafe_code)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let t = "42 (a) b (c)) S 1 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 5 1000 10 18446744073709551615 4096 8192 140000 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 12288 16384 20480 30000 30010 30010 30100 0\n";
        let s = parse_stat(Path::new("stat"), t).unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!((s.state, s.ppid, s.pgid, s.sid), ('S', 1, 42, 42));
        assert_eq!(s.flags, 4194560);
        assert_eq!(
            (s.start_code, s.end_code, s.start_stack),
            (4096, 8192, 140000)
        );
        assert_eq!(
            (s.start_data, s.end_data, s.start_brk),
            (12288, 16384, 20480)
        );
        assert_eq!((s.arg_start, s.env_end), (30000, 30100));
        assert!(parse_stat(Path::new("stat"), "42 (x) S 1").is_err());
        assert!(parse_stat(Path::new("stat"), "garbage").is_err());
    }

    #[test]
    fn self_proc_files() {
        let pid = std::process::id() as i32;
        let st = read_stat(pid).unwrap();
        assert!(matches!(st.state, 'R' | 'S'), "{}", st.state);
        let status = read_status(pid).unwrap();
        assert_eq!(status.uids[0], nix::unistd::getuid().as_raw());
        let maps = read_smaps(pid).unwrap();
        assert!(
            maps.iter()
                .any(|m| m.name == "[stack]" && m.has_flag(b"gd"))
        );
        assert!(maps.iter().any(|m| m.name == "[vdso]" && m.executable()));
        assert!(maps.iter().all(|m| !m.vm_flags.is_empty()));
        let fds = list_fds(pid).unwrap();
        assert!(!fds.is_empty());
        let info = read_fdinfo(pid, fds[0].0).unwrap();
        assert!(info.mnt_id > 0);
        let auxv = read_auxv(pid).unwrap();
        assert!(auxv.len() >= 2 && auxv.len().is_multiple_of(2));
        let lim = read_limits(pid).unwrap();
        assert_eq!(lim.len(), 16);
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes one rlimit into r, which we own.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
        assert_eq!(lim[7], (r.rlim_cur, r.rlim_max));
        assert_eq!(read_personality(pid).unwrap(), 0);
    }
}
