//! What compel works out once per process before its first infection, started ahead on a
//! thread of its own so that a tracer that has other work first (reading `/proc`, seizing)
//! does not wait for it later.

use std::thread::JoinHandle;

/// Starts working out, on a new thread, what the first infection of this process would
/// otherwise compute on the tracer's thread: the `syscall` instruction in this process's own
/// vDSO (decoded from the entries of its functions; most tasks map the same image, so their
/// site is then known without decoding theirs) and the CPU's xsave layout (CPUID, which traps
/// to the hypervisor on a virtual machine). Both are cached for the life of the process; a
/// caller that needs them before the thread is done waits for it there.
///
/// Join the handle (or let it run out) before anything that needs a single-threaded process
/// (`unshare(CLONE_NEWNS)`, `setns` into a mount or user namespace). `None` if no thread could
/// be started; nothing is lost then but the head start.
pub fn warm_up() -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("compel-warm".into())
        .stack_size(256 << 10)
        .spawn(|| {
            let _ = crate::task::own_vdso_site();
            let _ = compel_arch::xsave_frame_extent(0);
        })
        .ok()
}
