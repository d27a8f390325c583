//! `/proc/PID/mountinfo`: one [`MountInfo`] per line, as the kernel prints it
//! (`proc(5)`: id, parent id, `major:minor`, root, mount point, per-mount options, optional
//! fields up to `-`, file system type, source, superblock options).
//!
//! The text comes from another process's namespace and is untrusted: a line that does not
//! parse is an error naming the line, never a panic.

/// One mount as `/proc/PID/mountinfo` lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountInfo {
    /// Mount id.
    pub id: u32,
    /// The parent's mount id (itself for the root of a namespace).
    pub parent: u32,
    /// The device of the file system (major, minor).
    pub dev: (u32, u32),
    /// The directory of the file system mounted here.
    pub root: String,
    /// Where it is mounted, as the reading process sees it.
    pub mountpoint: String,
    /// Per-mount options (`rw`, `nosuid`, `relatime`, ...).
    pub mnt_opts: String,
    /// `shared:N`: the peer group.
    pub shared: Option<u32>,
    /// `master:N`: the group this one receives from.
    pub master: Option<u32>,
    /// `unbindable`.
    pub unbindable: bool,
    /// File system type (`tmpfs`, `fuse.sshfs`, ...).
    pub fstype: String,
    /// Source (`/dev/sda1`, `proc`, `none`, ...).
    pub source: String,
    /// Superblock options.
    pub super_opts: String,
}

impl MountInfo {
    /// The kernel's `dev_t` encoding of [`MountInfo::dev`] (`major << 20 | minor`), as CRIU's
    /// images record a mount's device.
    pub fn kdev(&self) -> u32 {
        (self.dev.0 << 20) | (self.dev.1 & 0xfffff)
    }
}

/// A mountinfo line that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("mountinfo line {line}: {what}")]
pub struct MountinfoError {
    /// 1-based line number.
    pub line: usize,
    /// What was wrong.
    pub what: &'static str,
}

/// A path field with its octal escapes (`\040` for a space, `\011`, `\012`, `\134`) undone.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a whole mountinfo text.
///
/// # Errors
/// [`MountinfoError`] for the first line that does not parse.
pub fn parse(text: &str) -> Result<Vec<MountInfo>, MountinfoError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| parse_line(l).map_err(|what| MountinfoError { line: n + 1, what }))
        .collect()
}

fn parse_line(l: &str) -> Result<MountInfo, &'static str> {
    let mut f = l.split(' ');
    let mut next = |what| f.next().filter(|s| !s.is_empty()).ok_or(what);
    let id = next("no mount id")?.parse().map_err(|_| "bad mount id")?;
    let parent = next("no parent id")?.parse().map_err(|_| "bad parent id")?;
    let (ma, mi) = next("no device")?.split_once(':').ok_or("bad device")?;
    let dev = (
        ma.parse().map_err(|_| "bad major")?,
        mi.parse().map_err(|_| "bad minor")?,
    );
    let root = unescape(next("no root")?);
    let mountpoint = unescape(next("no mount point")?);
    let mnt_opts = next("no mount options")?.to_string();
    let mut m = MountInfo {
        id,
        parent,
        dev,
        root,
        mountpoint,
        mnt_opts,
        ..MountInfo::default()
    };
    loop {
        let opt = next("no separator")?;
        if opt == "-" {
            break;
        }
        if let Some(n) = opt.strip_prefix("shared:") {
            m.shared = Some(n.parse().map_err(|_| "bad shared group")?);
        } else if let Some(n) = opt.strip_prefix("master:") {
            m.master = Some(n.parse().map_err(|_| "bad master group")?);
        } else if opt == "unbindable" {
            m.unbindable = true;
        }
        // propagate_from:N and fields of later kernels are not needed.
    }
    m.fstype = next("no file system type")?.to_string();
    m.source = unescape(next("no source")?);
    m.super_opts = f.next().unwrap_or("").to_string();
    Ok(m)
}

/// `MS_*` bits of per-mount options (`ro`, `nosuid`, `nodev`, `noexec`, atime options).
pub fn mount_flags(opts: &str) -> u32 {
    let mut fl = 0u64;
    for o in opts.split(',') {
        fl |= match o {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "noatime" => libc::MS_NOATIME,
            "nodiratime" => libc::MS_NODIRATIME,
            "relatime" => libc::MS_RELATIME,
            "strictatime" => libc::MS_STRICTATIME,
            _ => 0,
        };
    }
    fl as u32
}

/// Superblock options split into `MS_*` bits (`ro`, `sync`, `dirsync`, `mand`, `lazytime`)
/// and the rest, the file system's own options, comma-separated (`rw` dropped).
pub fn sb_flags(opts: &str) -> (u32, String) {
    let mut fl = 0u64;
    let mut rest = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => fl |= libc::MS_RDONLY,
            "sync" => fl |= libc::MS_SYNCHRONOUS,
            "dirsync" => fl |= libc::MS_DIRSYNC,
            "mand" => fl |= libc::MS_MANDLOCK,
            "lazytime" => fl |= libc::MS_LAZYTIME,
            "rw" => {}
            o => rest.push(o),
        }
    }
    (fl as u32, rest.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
40 27 0:50 /sub /mnt/a\\040b ro,nosuid master:3 shared:7 unbindable - tmpfs none rw,size=4k,mode=755
";

    #[test]
    fn lines_parse_with_optional_fields() {
        let v = parse(SAMPLE).unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].mountpoint, "/proc");
        assert_eq!(v[0].fstype, "proc");
        assert_eq!(v[1].shared, Some(1));
        assert_eq!(v[1].kdev(), 254 << 20);
        let t = &v[2];
        assert_eq!(
            (t.root.as_str(), t.mountpoint.as_str()),
            ("/sub", "/mnt/a b")
        );
        assert_eq!((t.shared, t.master, t.unbindable), (Some(7), Some(3), true));
        assert_eq!(t.super_opts, "rw,size=4k,mode=755");
        assert_eq!(
            mount_flags(&t.mnt_opts),
            (libc::MS_RDONLY | libc::MS_NOSUID) as u32
        );
        assert_eq!(sb_flags(&t.super_opts), (0, "size=4k,mode=755".to_string()));
    }

    #[test]
    fn bad_lines_are_errors() {
        assert_eq!(parse("1 2").unwrap_err().what, "no device");
        assert_eq!(
            parse("x 1 0:1 / / rw - a b c").unwrap_err().what,
            "bad mount id"
        );
        assert_eq!(
            parse("1 1 0:1 / / rw shared:1").unwrap_err().what,
            "no separator"
        );
        assert_eq!(parse("\n1 1 01 / / rw - a b c").unwrap_err().line, 2);
    }

    #[test]
    fn escapes() {
        assert_eq!(unescape("a\\040b\\134"), "a b\\");
        assert_eq!(unescape("\\0"), "\\0");
    }
}
