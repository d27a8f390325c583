//! Remote system calls: where the task's `syscall` instruction is (the vDSO's, found by
//! decoding it, or a `syscall; int3` stub planted for the call), and running one call in a
//! stopped thread.

use std::sync::OnceLock;

use compel_arch::{SYSCALL_INSN, SYSCALL_TRAP_STUB, restart};
use nix::errno::Errno;

use super::{SyscallMethod, Task, how};
use crate::mem::RemoteMem;
use crate::ptrace::{self, Stop};
use crate::{RemoteAddr, TaskError, proc, vdso};

#[derive(Clone, Copy, Debug)]
pub(super) enum SiteKind {
    /// A `syscall` instruction that exists in the task (the vDSO's): single-step over it.
    Existing,
    /// Our `syscall; int3` stub written over these original bytes.
    Patched([u8; 3]),
}

#[derive(Clone, Copy, Debug)]
pub(super) struct SyscallSite {
    pub(super) addr: RemoteAddr,
    pub(super) kind: SiteKind,
}
pub(super) type ResumeFn = fn(i32, i32) -> Result<(), Errno>;
/// This process's own vDSO image and the offset of the `syscall` instruction compel borrows in
/// it (see [`crate::vdso::syscall_offset`]).
pub(super) fn own_vdso() -> Option<&'static (Vec<u8>, usize)> {
    static OWN: OnceLock<Option<(Vec<u8>, usize)>> = OnceLock::new();
    OWN.get_or_init(|| {
        let me = std::process::id() as i32;
        let base = proc::auxv_vdso(me).ok()??;
        let img = read_vdso_image(&mut RemoteMem::new(me), base, vdso::MAX_IMAGE)?;
        let off = vdso::syscall_offset(&img)?;
        Some((img, off))
    })
    .as_ref()
}

/// The ELF image at `base` (at most `max` bytes; its length from its ELF header when that can
/// be read), or `None` if no ELF header is there.
pub(super) fn read_vdso_image(
    mem: &mut RemoteMem,
    base: RemoteAddr,
    max: usize,
) -> Option<Vec<u8>> {
    let mut header = [0u8; 64];
    mem.read(base, &mut header).ok()?;
    if !header.starts_with(b"\x7fELF") {
        return None;
    }
    let len = vdso::image_len(&header).unwrap_or(max).min(max);
    let mut img = vec![0u8; len];
    let n = mem.read_partial(base, &mut img).ok()?;
    img.truncate(n);
    Some(img)
}
impl Task {
    pub(super) fn find_site(&mut self) -> Result<SyscallSite, TaskError> {
        if let Some(s) = self.site {
            return Ok(s);
        }
        let pid = self.pid;
        let mut site = None;
        if self.opts.method != SyscallMethod::PatchCode {
            if let Some(addr) = self.find_vdso_syscall()? {
                site = Some(SyscallSite {
                    addr,
                    kind: SiteKind::Existing,
                });
            } else if self.opts.method == SyscallMethod::Vdso {
                return Err(TaskError::NoSyscallSite {
                    pid,
                    why: "no syscall instruction in a vdso",
                });
            }
        }
        let site = match site {
            Some(s) => s,
            None => {
                if !self.opts.all_threads {
                    return Err(TaskError::NoSyscallSite {
                        pid,
                        why: "patching code needs every thread stopped (all_threads)",
                    });
                }
                let maps = proc::maps(pid)?;
                let m = maps
                    .iter()
                    .find(|m| m.executable() && !m.name.starts_with('['))
                    .ok_or(TaskError::NoSyscallSite {
                        pid,
                        why: "no executable mapping",
                    })?;
                let mut orig = [0u8; 3];
                self.mem.read(m.start, &mut orig)?;
                SyscallSite {
                    addr: m.start,
                    kind: SiteKind::Patched(orig),
                }
            }
        };
        tracing::debug!(pid, addr = %site.addr, kind = ?site.kind, "syscall site");
        self.site = Some(site);
        Ok(site)
    }

    /// Finds a `syscall` instruction in the task's vDSO (located through the auxiliary vector,
    /// checked to be an ELF image, falling back to `/proc/PID/maps`), decoded from the entry of
    /// one of its exported functions so that it starts an instruction.
    pub(super) fn find_vdso_syscall(&mut self) -> Result<Option<RemoteAddr>, TaskError> {
        let mut bases = Vec::new();
        if let Some(b) = proc::auxv_vdso(self.pid)? {
            bases.push((b, vdso::MAX_IMAGE));
        }
        let mut tried_maps = false;
        loop {
            for &(base, max) in &bases {
                let Some(img) = read_vdso_image(&mut self.mem, base, max) else {
                    continue;
                };
                // Usually the task maps the very image this process does (same kernel): its
                // decoded offset is known already.
                let off = match own_vdso() {
                    Some((own, off)) if *own == img => Some(*off),
                    _ => vdso::syscall_offset(&img),
                };
                if let Some(off) = off {
                    return Ok(Some(base.offset(off as u64)));
                }
            }
            if tried_maps {
                return Ok(None);
            }
            tried_maps = true;
            bases = proc::maps(self.pid)?
                .into_iter()
                .filter(|m| m.name == "[vdso]" && m.executable())
                .map(|m| {
                    let len = (m.end.0 - m.start.0) as usize;
                    (m.start, len.min(vdso::MAX_IMAGE))
                })
                .collect();
        }
    }

    /// Runs system call `nr` with `args` in the thread given to [`Task::seize`]; see
    /// [`Task::remote_syscall_in`].
    ///
    /// # Errors
    /// As for [`Task::remote_syscall_in`].
    pub fn remote_syscall(&mut self, nr: usize, args: [u64; 6]) -> Result<i64, TaskError> {
        self.remote_syscall_in(self.pid, nr, args)
    }

    /// Runs system call `nr` with `args` in thread `tid` and returns the kernel's raw result
    /// (`-errno` on failure).
    ///
    /// The thread's registers are loaded with the call, its instruction pointer set to a
    /// `syscall` instruction (the vDSO's, else a planted `syscall; int3`), all signals but
    /// `SIGTRAP` blocked ([`ptrace::REMOTE_CODE_SIGMASK`]), and it is single-stepped (or
    /// continued to the `int3`) until the syscall has returned;
    /// then registers and signal mask are put back. A thread that was stopped inside an
    /// interrupted syscall (`-ERESTART*` pending) therefore restarts it when it resumes. If the
    /// remote call itself is interrupted by an unblockable stop, it is restarted too. The mask
    /// is restored after the call, so a remote `rt_sigprocmask` has no lasting effect: use
    /// [`Task::set_sigmask`].
    ///
    /// # Errors
    /// [`TaskError::NotOurThread`], [`TaskError::NoSyscallSite`], [`TaskError::Died`] if the
    /// task dies meanwhile, [`TaskError::UnexpectedStop`] if the thread ends up elsewhere (e.g.
    /// after a remote `execve`), or a ptrace failure.
    pub fn remote_syscall_in(
        &mut self,
        tid: i32,
        nr: usize,
        args: [u64; 6],
    ) -> Result<i64, TaskError> {
        let i = self.thread_index(tid)?;
        let site = self.find_site()?;
        let orig = self.regs(tid)?;
        if !orig.is_native() {
            return Err(TaskError::Unsupported {
                tid,
                why: "not a 64-bit task (compat mode)",
            });
        }
        let mask = self.sigmask(tid)?;
        ptrace::set_sigmask(tid, ptrace::REMOTE_CODE_SIGMASK)
            .map_err(TaskError::ptrace("SETSIGMASK", tid))?;
        let mut r = orig;
        r.set_syscall(nr as u64, args);
        r.set_ip(site.addr.0);
        let mut result = ptrace::set_regs(tid, &r).map_err(TaskError::ptrace("SETREGS", tid));
        if result.is_ok()
            && let SiteKind::Patched(_) = site.kind
        {
            result = self.mem.write(site.addr, &SYSCALL_TRAP_STUB);
        }
        let ret = match result {
            Ok(()) => self.step_syscall(i, site),
            Err(e) => Err(e),
        };
        // Put everything back, even after a failure (unless the thread is gone).
        if let SiteKind::Patched(bytes) = site.kind
            && let Err(e) = self.mem.write(site.addr, &bytes)
        {
            tracing::error!(pid = self.pid, addr = %site.addr, error = %e, "cannot restore patched code");
        }
        if ret.as_ref().is_err_and(TaskError::is_gone) {
            return ret;
        }
        ptrace::set_regs(tid, &orig).map_err(TaskError::ptrace("SETREGS", tid))?;
        ptrace::set_sigmask(tid, mask).map_err(TaskError::ptrace("SETSIGMASK", tid))?;
        ret
    }

    /// Resumes thread `i` at the prepared syscall site until the syscall has run; returns its
    /// result.
    pub(super) fn step_syscall(&mut self, i: usize, site: SyscallSite) -> Result<i64, TaskError> {
        let tid = self.threads[i].tid;
        let (resume, done_ip): (ResumeFn, u64) = match site.kind {
            SiteKind::Existing => (ptrace::single_step, site.addr.0 + SYSCALL_INSN.len() as u64),
            SiteKind::Patched(_) => (ptrace::cont, site.addr.0 + SYSCALL_TRAP_STUB.len() as u64),
        };
        loop {
            resume(tid, 0).map_err(TaskError::ptrace("resume", tid))?;
            self.threads[i].stopped = false;
            self.threads[i].in_signal_stop = false;
            let stop = ptrace::wait(tid).map_err(|source| TaskError::Wait { tid, source })?;
            if let Stop::Exited(_) | Stop::Killed(_) = stop {
                self.threads.remove(i);
                return Err(TaskError::Died {
                    tid,
                    how: how(stop),
                });
            }
            let th = &mut self.threads[i];
            th.stopped = true;
            let regs = ptrace::get_regs(tid).map_err(TaskError::ptrace("GETREGS", tid))?;
            if let Stop::Signal(sig) = stop {
                th.in_signal_stop = true;
                let at_site = regs.ip() == site.addr.0 || regs.ip() == done_ip;
                if at_site
                    && matches!(
                        sig,
                        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE
                    )
                {
                    // Our own doing (the site is not executable code after all): suppress it.
                    return Err(TaskError::UnexpectedStop {
                        tid,
                        stop: format!("{stop:?} at ip {:#x}", regs.ip()),
                        during: "remote syscall",
                    });
                }
                if sig != libc::SIGTRAP {
                    // An unblockable signal (SIGSTOP) or one forced on the task: keep it for
                    // detach, as blocking would have.
                    let si =
                        ptrace::get_siginfo(tid).map_err(TaskError::ptrace("GETSIGINFO", tid))?;
                    tracing::debug!(tid, sig, "signal during remote syscall kept for detach");
                    th.reinject.push(si);
                }
            }
            if regs.ip() == done_ip {
                // The syscall ran; if it was cut short by a stop and wants a restart, let the
                // kernel rewind and run it again.
                if regs.syscall_nr().is_some() && restart::is_restart(regs.syscall_ret()) {
                    continue;
                }
                return Ok(regs.syscall_ret());
            }
            if regs.ip() == site.addr.0 {
                continue; // stopped before the syscall ran (interrupt, group stop, signal)
            }
            return Err(TaskError::UnexpectedStop {
                tid,
                stop: format!("{stop:?} at ip {:#x}", regs.ip()),
                during: "remote syscall",
            });
        }
    }
}
