//! What the task layer reads from `/proc`: task states, tracers, seccomp modes, threads, the
//! vDSO and executable mappings. Everything here is untrusted input and parsed defensively.

use std::io::{self, ErrorKind};

use crate::{RemoteAddr, TaskError};

fn proc_err(path: String) -> impl FnOnce(io::Error) -> TaskError {
    move |source| TaskError::Proc { path, source }
}

fn bad(path: String, what: &'static str) -> TaskError {
    TaskError::Proc {
        path,
        source: io::Error::new(ErrorKind::InvalidData, what),
    }
}

/// Reads a whole /proc (or /sys) file. Unlike `fs::read`, it does not stat the file first to
/// size its buffer: /proc files say they are empty anyway, and a dump reads a few dozen of them
/// per task.
///
/// # Errors
/// Opening or reading the file.
pub fn read_file(path: impl AsRef<std::path::Path>) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(4096);
    // Through `Take`, whose read_to_end asks for no size hint (File's would fstat).
    (&f).take(u64::MAX).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// [`read_file`] as text (invalid UTF-8 replaced).
///
/// # Errors
/// Opening or reading the file.
pub fn read_text(path: impl AsRef<std::path::Path>) -> io::Result<String> {
    let bytes = read_file(path)?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// Reads a /proc file; a missing file (the task is gone) becomes [`TaskError::NoSuchTask`].
fn read(pid: i32, path: String) -> Result<String, TaskError> {
    match read_text(&path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) => {
            Err(TaskError::NoSuchTask { pid })
        }
        Err(e) => Err(proc_err(path)(e)),
    }
}

/// The state letter of task `tid` (`R`, `S`, `D`, `T`, `t`, `Z`, `X`, `I`, ...) from
/// `/proc/TID/stat`.
pub fn state_letter(tid: i32) -> Result<char, TaskError> {
    let path = format!("/proc/{tid}/stat");
    let stat = read(tid, path.clone())?;
    // The command name is in parentheses and may itself contain ") ".
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| bad(path.clone(), "no ')'"))?;
    after
        .trim_start()
        .chars()
        .next()
        .ok_or_else(|| bad(path, "no state"))
}

/// A field of `/proc/TID/status` (e.g. `"TracerPid"`), as text.
pub fn status_field(tid: i32, field: &str) -> Result<Option<String>, TaskError> {
    let status = read(tid, format!("/proc/{tid}/status"))?;
    Ok(status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    }))
}

/// The pid tracing `tid`, 0 if none.
pub fn tracer_pid(tid: i32) -> Result<i32, TaskError> {
    Ok(status_field(tid, "TracerPid")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// The seccomp mode of thread `tid`: 0 none, 1 strict, 2 filter.
pub fn seccomp_mode(tid: i32) -> Result<u32, TaskError> {
    Ok(status_field(tid, "Seccomp")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// This process's effective capability set (`CapEff`), if `/proc/self/status` shows it.
pub fn self_effective_caps() -> Option<u64> {
    status_field(std::process::id() as i32, "CapEff")
        .ok()
        .flatten()
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
}

/// Whether this process has `CAP_SYS_ADMIN` in its effective set.
pub fn self_has_cap_sys_admin() -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    self_effective_caps().is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// The thread ids of process `pid` (`/proc/PID/task`).
pub fn threads(pid: i32) -> Result<Vec<i32>, TaskError> {
    let path = format!("/proc/{pid}/task");
    let dir = match std::fs::read_dir(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(TaskError::NoSuchTask { pid }),
        Err(e) => return Err(proc_err(path)(e)),
    };
    let mut out = Vec::new();
    for ent in dir {
        let ent = ent.map_err(proc_err(path.clone()))?;
        if let Some(tid) = ent.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(tid);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// The vDSO base address from the task's auxiliary vector (`AT_SYSINFO_EHDR`), if any.
pub fn auxv_vdso(pid: i32) -> Result<Option<RemoteAddr>, TaskError> {
    const AT_SYSINFO_EHDR: u64 = 33;
    let path = format!("/proc/{pid}/auxv");
    // One open and (usually) two reads: the vector is a few hundred bytes.
    let mut data = Vec::with_capacity(1024);
    let res = std::fs::File::open(&path).and_then(|mut f| {
        use std::io::Read;
        f.read_to_end(&mut data)
    });
    match res {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Err(TaskError::NoSuchTask { pid }),
        Err(e) => return Err(proc_err(path)(e)),
    }
    Ok(data.chunks_exact(16).find_map(|c| {
        let key = u64::from_ne_bytes(c[..8].try_into().ok()?);
        let val = u64::from_ne_bytes(c[8..].try_into().ok()?);
        (key == AT_SYSINFO_EHDR && val != 0).then_some(RemoteAddr(val))
    }))
}

/// One line of `/proc/PID/maps`, or one area of `/proc/PID/smaps` with its `VmFlags`: the one
/// parser of these files, for compel (syscall sites, the vDSO) and criu (dump classifies every
/// area, restore finds its own special mappings).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// First address.
    pub start: RemoteAddr,
    /// One past the last address.
    pub end: RemoteAddr,
    /// The `rwxp` (or `rwxs`) permission string.
    pub perms: String,
    /// File offset.
    pub offset: u64,
    /// Device major of the mapped file (0 for anonymous memory).
    pub dev_major: u32,
    /// Device minor of the mapped file.
    pub dev_minor: u32,
    /// Inode of the mapped file (0 for anonymous memory).
    pub inode: u64,
    /// Path or pseudo-name (`[vdso]`, `[stack]`, `[heap]`), empty for anonymous memory.
    pub name: String,
    /// The two-letter `VmFlags` of the area (`gd`, `lo`, `ht`, ...): filled from
    /// `/proc/PID/smaps` ([`parse_smaps`]), empty from `/proc/PID/maps`.
    pub vm_flags: Vec<[u8; 2]>,
}

impl Mapping {
    fn perm(&self, i: usize, c: u8) -> bool {
        self.perms.as_bytes().get(i) == Some(&c)
    }

    /// Whether the mapping is readable (`r`).
    pub fn readable(&self) -> bool {
        self.perm(0, b'r')
    }

    /// Whether the mapping is writable (`w`).
    pub fn writable(&self) -> bool {
        self.perm(1, b'w')
    }

    /// Whether the mapping is executable (`x`).
    pub fn executable(&self) -> bool {
        self.perm(2, b'x')
    }

    /// Whether the mapping is shared (`s`) rather than private (`p`).
    pub fn shared(&self) -> bool {
        self.perm(3, b's')
    }

    /// Whether `VmFlags` holds `flag` (e.g. `b"gd"`).
    pub fn has_flag(&self, flag: &[u8; 2]) -> bool {
        self.vm_flags.iter().any(|f| f == flag)
    }
}

/// Parses one `/proc/PID/maps` line (`start-end perms offset major:minor inode [name]`, the
/// name possibly holding spaces); `None` if it is not one.
pub fn parse_map_line(line: &str) -> Option<Mapping> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?;
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let (major, minor) = it.next()?.split_once(':')?;
    let inode = it.next()?.parse().ok()?;
    let name = it.next().unwrap_or("").trim_start().to_string();
    let (s, e) = range.split_once('-')?;
    if perms.len() < 4 {
        return None;
    }
    Some(Mapping {
        start: RemoteAddr(u64::from_str_radix(s, 16).ok()?),
        end: RemoteAddr(u64::from_str_radix(e, 16).ok()?),
        perms: perms.to_string(),
        offset,
        dev_major: u32::from_str_radix(major, 16).ok()?,
        dev_minor: u32::from_str_radix(minor, 16).ok()?,
        inode,
        name,
        vm_flags: Vec::new(),
    })
}

/// Parses `/proc/PID/maps` text. Lines that do not parse are skipped.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_map_line).collect()
}

/// A range line of `/proc/PID/smaps` that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("bad map line: {line}")]
pub struct BadMapLine {
    /// The line.
    pub line: String,
}

/// Parses `/proc/PID/smaps` text: each area's range line, with the `VmFlags` line that follows
/// it; the other `Key: value` lines are passed over.
///
/// # Errors
/// [`BadMapLine`] for a range line (one starting `hex-hex`) that does not parse: unlike
/// [`parse_maps`], every area counts here.
pub fn parse_smaps(text: &str) -> Result<Vec<Mapping>, BadMapLine> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if is_range_line(line) {
            out.push(parse_map_line(line).ok_or_else(|| BadMapLine {
                line: line.to_string(),
            })?);
        } else if let Some(fl) = line.strip_prefix("VmFlags:")
            && let Some(last) = out.last_mut()
        {
            last.vm_flags = fl
                .split_whitespace()
                .filter_map(|t| <[u8; 2]>::try_from(t.as_bytes()).ok())
                .collect();
        }
    }
    Ok(out)
}

/// Whether an smaps line is an area's range line (`start-end perms ...`, hex addresses) rather
/// than one of its `Key: value` lines.
fn is_range_line(line: &str) -> bool {
    let first = line.split(' ').next().unwrap_or("");
    first.contains('-') && first.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// The task's memory mappings (`/proc/PID/maps`).
pub fn maps(pid: i32) -> Result<Vec<Mapping>, TaskError> {
    Ok(parse_maps(&read(pid, format!("/proc/{pid}/maps"))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_parse() {
        let text = "55d0a0000000-55d0a0001000 r-xp 00001000 fd:01 1234   /usr/bin/x y\n\
                    7ffd1000-7ffd3000 r-xp 00000000 00:00 0                  [vdso]\n\
                    7ffd5000-7ffd6000 rw-s 00000000 00:00 0 \n\
                    7ffd7000-7ffd8000 rw-p 00000000 103:0a 99 /memfd:x (deleted)\n\
                    garbage\n\
                    7ffd9000-7ffda000 rw 00000000 00:00 0\n\
                    7ffd9000-7ffda000 rw-p 00000000 00:00 x\n";
        let m = parse_maps(text);
        assert_eq!(m.len(), 4, "malformed lines are skipped");
        assert_eq!(m[0].name, "/usr/bin/x y");
        assert_eq!(m[0].offset, 0x1000);
        assert_eq!(
            (m[0].dev_major, m[0].dev_minor, m[0].inode),
            (0xfd, 1, 1234)
        );
        assert!(m[0].readable() && !m[0].writable() && m[0].executable() && !m[0].shared());
        assert_eq!(m[1].name, "[vdso]");
        assert_eq!(m[1].start, RemoteAddr(0x7ffd1000));
        assert_eq!(m[1].end, RemoteAddr(0x7ffd3000));
        assert_eq!(m[2].name, "");
        assert!(!m[2].executable() && m[2].writable() && m[2].shared());
        assert_eq!((m[3].dev_major, m[3].dev_minor), (0x103, 0xa));
        assert_eq!(m[3].name, "/memfd:x (deleted)");
        assert!(m.iter().all(|m| m.vm_flags.is_empty()));
    }

    #[test]
    fn smaps_parse() {
        let text = "7ffd1000-7ffd3000 rw-p 00000000 00:00 0          [stack]\n\
                    Size:                132 kB\n\
                    VmFlags: rd wr mr mw me gd ac \n\
                    7ffd5000-7ffd6000 r--s 00002000 08:02 77 /a b\n\
                    Rss:                   4 kB\n\
                    VmFlags: rd sh mr mw me ms sd\n";
        let m = parse_smaps(text).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name, "[stack]");
        assert!(m[0].has_flag(b"gd") && !m[0].has_flag(b"sh"));
        assert_eq!(m[0].vm_flags.len(), 7);
        assert_eq!(
            (m[1].offset, m[1].inode, m[1].name.as_str()),
            (0x2000, 77, "/a b")
        );
        assert!(m[1].shared() && m[1].has_flag(b"sh"));
        // A range line that does not parse is an error, not a skipped area.
        let bad = "7ffd1000-7ffd3000 rw-p zz 00:00 0\nVmFlags: rd\n";
        assert_eq!(
            parse_smaps(bad).unwrap_err().line,
            "7ffd1000-7ffd3000 rw-p zz 00:00 0"
        );
        // Our own smaps: every area has its flags, the stack grows down.
        let own = parse_smaps(&read_text("/proc/self/smaps").unwrap()).unwrap();
        assert!(own.iter().all(|m| !m.vm_flags.is_empty()));
        assert!(own.iter().any(|m| m.name == "[stack]" && m.has_flag(b"gd")));
    }

    #[test]
    fn read_file_reads_whole_proc_files() {
        // A /proc file (which reports size 0) well past one 4 KiB buffer, read to its end.
        let smaps = read_text("/proc/self/smaps").unwrap();
        assert!(
            smaps.len() > 4096 && smaps.ends_with('\n'),
            "{}",
            smaps.len()
        );
        assert!(smaps.contains("VmFlags:"));
        // A plain file comes back byte for byte.
        let path = std::env::temp_dir().join(format!("compel-read-file-{}", std::process::id()));
        let data: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let back = read_file(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(back.unwrap(), data);
        assert_eq!(
            read_file("/proc/does-not-exist").unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn own_state() {
        let me = std::process::id() as i32;
        // This thread is running (the process's main thread waits for the test harness).
        assert_eq!(state_letter(nix::unistd::gettid().as_raw()).unwrap(), 'R');
        assert_eq!(tracer_pid(me).unwrap(), 0);
        assert!(threads(me).unwrap().contains(&me));
        assert!(auxv_vdso(me).unwrap().is_some());
        assert!(matches!(
            state_letter(i32::MAX),
            Err(TaskError::NoSuchTask { .. })
        ));
    }
}
