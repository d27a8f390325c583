//! `fdspy PID FD`: takes a copy of fd FD out of process PID (the fdspy parasite sends it over
//! the control socket with the fds plugin), prints what it is — the `/proc/self/fd` link target,
//! its type, its flags as the process sees them, its offset — and, for a pipe or a regular
//! file, the bytes it holds, without consuming them: a regular file is read with `pread` from
//! offset 0, a pipe is duplicated with `tee(2)` into a pipe of ours. The process runs on
//! unharmed.
//!
//! ```text
//! $ cargo run -p compel --example fdspy -- 1234 3
//! fd 3 of 1234: pipe:[123456]
//!   type pipe, flags O_RDONLY|O_CLOEXEC, offset none
//!   9 bytes: "pipe-data"
//! ```

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, FileTypeExt};

use anyhow::{Context, bail};
use compel::Task;
use compel::infect::{InfectOptions, Parasite, RpcError};
use parasite_blobs::fdspy::{self, proto::FdInfo};

/// The most bytes shown.
const SHOW: usize = 4096;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fdspy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pid, fd] = args.as_slice() else {
        bail!("usage: fdspy PID FD");
    };
    let pid: i32 = pid.parse().with_context(|| format!("bad pid {pid:?}"))?;
    let fd: i32 = fd.parse().with_context(|| format!("bad fd {fd:?}"))?;
    if fd < 0 {
        bail!("bad fd {fd}");
    }
    let mut task = Task::seize(pid).with_context(|| format!("cannot seize {pid}"))?;
    let mut parasite = Parasite::infect(&mut task, &fdspy::blob(), InfectOptions::default())
        .with_context(|| format!("cannot infect {pid}"))?;
    let args = FdInfo {
        fd,
        ..FdInfo::default()
    };
    compel_proto::write_plain(parasite.payload_mut(), &args);
    let got = parasite.call_fds(fdspy::proto::CMD_SPY, &[]);
    let info: Option<FdInfo> = compel_proto::read_plain(parasite.payload());
    parasite.cure().context("cure")?;
    task.detach().context("detach")?;
    let fds = match got {
        Ok(f) => f,
        Err(RpcError::Failed {
            errno: nix::errno::Errno::EBADF,
            ..
        }) => {
            bail!("fd {fd} is not open in process {pid}")
        }
        Err(e) => return Err(e).context("spy command"),
    };
    let (Some(info), Some(file)) = (info, fds.into_iter().next()) else {
        bail!("the parasite sent no fd");
    };
    describe(pid, &info, file)
}

fn describe(pid: i32, info: &FdInfo, file: OwnedFd) -> anyhow::Result<()> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("(no link: {e})"));
    let file = File::from(file);
    let meta = file.metadata().context("fstat")?;
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        "regular file"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "pipe"
    } else if ft.is_socket() {
        "socket"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_symlink() {
        "symlink"
    } else {
        "other"
    };
    let offset = if info.offset < 0 {
        "none".to_string()
    } else {
        info.offset.to_string()
    };
    println!("fd {} of {pid}: {link}", info.fd);
    println!(
        "  type {kind}, flags {}, offset {offset}",
        flags(info.status_flags, info.fd_flags)
    );
    let data = if ft.is_file() {
        let mut buf = vec![0u8; SHOW.min(meta.len() as usize)];
        let n = file.read_at(&mut buf, 0).context("pread")?;
        buf.truncate(n);
        Some(buf)
    } else if ft.is_fifo() {
        Some(peek_pipe(&file)?)
    } else {
        None
    };
    if let Some(d) = data {
        println!("  {} bytes: {:?}", d.len(), String::from_utf8_lossy(&d));
    }
    Ok(())
}

/// Copies what a pipe holds without consuming it: `tee` into a pipe of ours, then read that.
fn peek_pipe(pipe: &File) -> anyhow::Result<Vec<u8>> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: pipe2 just created both fds; we own them.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: tee between two pipe fds we hold; it copies at most SHOW bytes and never blocks.
    let n = unsafe {
        libc::tee(
            pipe.as_raw_fd(),
            w.as_raw_fd(),
            SHOW,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(Vec::new()); // empty pipe
        }
        if e.raw_os_error() == Some(libc::EINVAL) {
            println!("  (write end of a pipe: nothing to read)");
            return Ok(Vec::new());
        }
        return Err(e).context("tee");
    }
    drop(w);
    let mut out = Vec::new();
    File::from(r).read_to_end(&mut out).context("read")?;
    Ok(out)
}

fn flags(fl: i32, fdfl: i32) -> String {
    let mut v = vec![match fl & libc::O_ACCMODE {
        libc::O_RDONLY => "O_RDONLY",
        libc::O_WRONLY => "O_WRONLY",
        _ => "O_RDWR",
    }];
    for (bit, name) in [
        (libc::O_APPEND, "O_APPEND"),
        (libc::O_NONBLOCK, "O_NONBLOCK"),
        (libc::O_DIRECT, "O_DIRECT"),
        (libc::O_SYNC, "O_SYNC"),
        (libc::O_NOATIME, "O_NOATIME"),
        (libc::O_PATH, "O_PATH"),
    ] {
        if fl & bit != 0 {
            v.push(name);
        }
    }
    if fdfl & libc::FD_CLOEXEC != 0 {
        v.push("O_CLOEXEC");
    }
    v.join("|")
}
