//! The parasite's entry (only with `--cfg compel_parasite`): the stub the host starts, the Rust
//! side of it, and the panic handler.
//!
//! Contract with the host (see `compel_proto::rpc`): the task starts at
//! `__export_parasite_head` with `rdi` = the args area and `rsp` = the top of a stack. The stub
//! aligns the stack and calls `__export_parasite_main(args)`, which returns the address to
//! `rt_sigreturn` through (daemon mode) or 0 (trap mode, or no frame given): the stub then
//! executes `int3` for the host to catch.

use super::service::{self, Ended};
use super::sys::{self, Errno};
use compel_proto::rpc::{
    ARGS_PAYLOAD_OFFSET, INIT_FINI_TRAP, INIT_MAGIC, INIT_SETUP, INIT_VERSION, MODE_DAEMON,
    MODE_TRAP, ParasiteInit, STOP_SIGNAL,
};
use core::sync::atomic::{AtomicU64, Ordering};

// The per-architecture entry stub. x86_64: the only architecture compel-arch supports yet.
// Its section is not one of the `.text.__export_*` that compel's linker script keeps
// unconditionally: a parasite with its own entry point (`ld -e`) drops the stub, the service
// loop and its need for a command handler.
core::arch::global_asm!(
    ".pushsection .text.compel_parasite_head,\"ax\",@progbits",
    ".globl __export_parasite_head",
    ".type __export_parasite_head,@function",
    "__export_parasite_head:",
    "    and rsp, -16",
    "    xor ebp, ebp",
    "    call __export_parasite_main",
    "    test rax, rax",
    "    jz 2f",
    "    mov rsp, rax",
    "    mov eax, {rt_sigreturn}",
    "    syscall",
    "2:  int3",
    "    jmp 2b",
    ".size __export_parasite_head, . - __export_parasite_head",
    ".popsection",
    rt_sigreturn = const compel_arch::nr::RT_SIGRETURN,
);

/// Where to `rt_sigreturn` to on the way out, for the panic handler.
static SIGFRAME: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    /// The parasite's command handler (Rust: `compel_plugins::parasite_handler!`; C: defined by
    /// the parasite).
    fn compel_parasite_handle(cmd: u32, payload: *mut u8, len: usize) -> i32;
}

fn call_handler(cmd: u32, payload: &mut [u8]) -> Result<(), Errno> {
    // SAFETY: the handler receives the payload area (pointer and length of a live, exclusively
    // borrowed slice) for the duration of the call, as its contract says.
    let ret = unsafe { compel_parasite_handle(cmd, payload.as_mut_ptr(), payload.len()) };
    if ret < 0 { Err(Errno(-ret)) } else { Ok(()) }
}

/// The Rust side of the entry: runs the parasite as `init` says and returns what to
/// `rt_sigreturn` through, or 0 to trap.
///
/// # Safety
/// `init` points at an args area of `ARGS_PAYLOAD_OFFSET + init.payload_size` bytes, writable,
/// which the host does not change while a command runs.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".text.compel_parasite_main")]
pub unsafe extern "C" fn __export_parasite_main(init: *mut ParasiteInit) -> u64 {
    if init.is_null() {
        return 0;
    }
    // SAFETY: init points at the args area header (as this function requires); read by value once.
    let hdr = unsafe { core::ptr::read_volatile(init) };
    let fail = |e: Errno| {
        // SAFETY: init points at the args area header (the caller's contract); trap_ret is a
        // field of it, written once.
        unsafe { core::ptr::write_volatile(&raw mut (*init).trap_ret, -e.0) };
    };
    if hdr.magic != INIT_MAGIC || hdr.version != INIT_VERSION {
        fail(Errno::EINVAL);
        return 0;
    }
    super::log::set_log(hdr.log_fd, hdr.log_level);
    SIGFRAME.store(hdr.sigframe, Ordering::Relaxed);
    // SAFETY: the args area holds payload_size bytes after the header (as this function requires),
    // and nothing else in this task uses them while the parasite runs.
    let payload = unsafe {
        core::slice::from_raw_parts_mut(
            init.cast::<u8>().add(ARGS_PAYLOAD_OFFSET),
            hdr.payload_size as usize,
        )
    };
    let mut handler = call_handler;
    match hdr.mode {
        MODE_TRAP => {
            service::set_ctl_sock(hdr.ctl_fd);
            let ret = match service::dispatch(hdr.ctl_fd, hdr.trap_cmd, payload, &mut handler) {
                Ok(()) => 0,
                Err(e) => -e.0,
            };
            // SAFETY: as for `fail`.
            unsafe { core::ptr::write_volatile(&raw mut (*init).trap_ret, ret) };
            0
        }
        MODE_DAEMON => {
            let mut hdr = hdr;
            if hdr.flags & INIT_SETUP != 0 {
                // SAFETY: init points at the args area header (as this function requires).
                match unsafe { setup(init, &mut hdr) } {
                    Ok(()) => super::log::set_log(hdr.log_fd, hdr.log_level),
                    Err(e) => {
                        fail(e);
                        // Nothing of ours is left open: the host restores the task's state,
                        // or (gone) the frame does.
                        stop_for_host();
                        return hdr.sigframe;
                    }
                }
            }
            let sock = if hdr.ctl_fd >= 0 {
                hdr.ctl_fd
            } else {
                let len = (hdr.sock_addr_len as usize).min(hdr.sock_addr.len());
                match service::connect_unix(&hdr.sock_addr[..len]) {
                    Ok(fd) => fd,
                    Err(e) => {
                        crate::log!(ERROR, "cannot connect to the host: errno {}", e.0);
                        fail(e);
                        return hdr.sigframe;
                    }
                }
            };
            service::set_ctl_sock(sock);
            crate::log!(DEBUG, "serving on fd {}", sock);
            let ended = service::serve(sock, payload, &mut handler);
            match ended {
                Ended::Fini => crate::log!(DEBUG, "fini"),
                Ended::HostGone => crate::log!(WARN, "host went away: curing myself"),
                Ended::Error(e) => crate::log!(ERROR, "control socket failed: errno {}", e.0),
            }
            service::set_ctl_sock(-1);
            let _ = sys::close(sock);
            let log = super::log::log_fd();
            if log >= 0 && log != hdr.log_fd {
                let _ = sys::close(log); // received with CMD_SET_LOG: ours to close
            }
            super::log::set_log(-1, 0);
            if matches!(ended, Ended::Fini) && hdr.flags & INIT_FINI_TRAP != 0 {
                if hdr.log_fd >= 0 {
                    let _ = sys::close(hdr.log_fd);
                }
                // The host restores the task's state here; if it went away meanwhile, the
                // frame does.
                stop_for_host();
            }
            hdr.sigframe
        }
        _ => {
            fail(Errno::EINVAL);
            0
        }
    }
}

/// Stops this thread for the host: a signal-delivery-stop for [`STOP_SIGNAL`] raised here, which
/// the host suppresses. Not a breakpoint: should the host die while the thread is held there,
/// the kernel delivers the pending signal, and `SIGURG` is ignored by default (a task's own
/// handler sees one spurious call) where `SIGTRAP` would kill the task.
fn stop_for_host() {
    if sys::unblock_signal(STOP_SIGNAL).is_ok() {
        let _ = sys::raise(STOP_SIGNAL);
    }
}

/// [`INIT_SETUP`]: closes `close_fd`, guards the page below the stack, makes the socket pairs,
/// publishes their fds in `init` and stops for the host to take its ends; then closes the
/// host's ends here. On failure everything made is closed again.
///
/// # Safety
/// `init` points at the args area header, which the host reads and writes only while this
/// thread is stopped at the trap.
unsafe fn setup(init: *mut ParasiteInit, hdr: &mut ParasiteInit) -> Result<(), Errno> {
    if hdr.close_fd >= 0 {
        let _ = sys::close(hdr.close_fd);
    }
    if hdr.guard != 0 {
        // SAFETY: the host reserved this range of its region as a guard: nothing uses it.
        unsafe { sys::mprotect(hdr.guard as usize, hdr.guard_len as usize, 0)? };
    }
    const AF_UNIX: i32 = 1;
    const SOCK_DGRAM: i32 = 2;
    const SOCK_SEQPACKET: i32 = 5;
    const SOCK_CLOEXEC: i32 = 0o2000000;
    let ctl = sys::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0)?;
    let log = if hdr.setup_log != 0 {
        match sys::socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) {
            Ok(l) => l,
            Err(e) => {
                let _ = sys::close(ctl[0]);
                let _ = sys::close(ctl[1]);
                return Err(e);
            }
        }
    } else {
        [-1, -1]
    };
    hdr.ctl_fd = ctl[1];
    hdr.host_ctl = ctl[0];
    hdr.log_fd = log[1];
    hdr.host_log = log[0];
    // SAFETY: init points at the header (as this function requires); the host reads it at the trap.
    unsafe {
        core::ptr::write_volatile(&raw mut (*init).ctl_fd, ctl[1]);
        core::ptr::write_volatile(&raw mut (*init).host_ctl, ctl[0]);
        core::ptr::write_volatile(&raw mut (*init).log_fd, log[1]);
        core::ptr::write_volatile(&raw mut (*init).host_log, log[0]);
        core::ptr::write_volatile(&raw mut (*init).trap_ret, 0);
    }
    // The host takes its ends out of this task while we are stopped here.
    stop_for_host();
    let _ = sys::close(ctl[0]);
    if log[0] >= 0 {
        let _ = sys::close(log[0]);
    }
    Ok(())
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::log!(ERROR, "parasite panicked: {}", info);
    let sock = service::ctl_sock();
    if sock >= 0 {
        let _ = sys::close(sock); // the host sees the socket close
    }
    let frame = SIGFRAME.load(Ordering::Relaxed);
    if frame != 0 {
        // SAFETY: the host placed a complete rt_sigframe there before starting us; returning
        // through it abandons the parasite and resumes the task where it was.
        unsafe { compel_arch::rt_sigreturn(frame as usize) }
    }
    loop {
        // SAFETY: a breakpoint only traps to the host (the tracer); no memory is touched.
        unsafe { core::arch::asm!("int3", options(nomem, nostack)) };
    }
}
