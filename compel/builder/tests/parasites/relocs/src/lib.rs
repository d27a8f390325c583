//! A test parasite whose output depends on absolute addresses: a table of names and function
//! pointers, statics, string slices, and core::fmt (itself full of pointer tables).
#![no_std]

use compel_plugins::std::Errno;
use core::fmt::Write;
use core::sync::atomic::{AtomicU32, Ordering};

compel_plugins::parasite_handler!(handle);

fn handle(_cmd: u32, _payload: &mut [u8]) -> Result<(), Errno> {
    Err(Errno::ENOSYS)
}

fn double(x: u64) -> u64 {
    x * 2
}
fn square(x: u64) -> u64 {
    x * x
}
fn negate(x: u64) -> u64 {
    x.wrapping_neg()
}

static OPS: [(&str, fn(u64) -> u64); 3] =
    [("double", double), ("square", square), ("negate", negate)];
static GREETING: &str = "relocated";

/// Counts calls of `__export_describe`; exported so that the host can read it.
#[unsafe(no_mangle)]
pub static __export_calls: AtomicU32 = AtomicU32::new(0);

struct Buf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Writes a description of `x` into `buf`; returns its length (0 if it did not fit).
///
/// # Safety
/// `buf` is valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __export_describe(buf: *mut u8, len: usize, x: u64) -> usize {
    // SAFETY: `buf` is valid for `len` bytes (this function's safety contract) and nothing
    // else uses it during the call.
    let buf = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    let mut w = Buf { buf, len: 0 };
    let n = __export_calls.fetch_add(1, Ordering::Relaxed) + 1;
    let mut r = write!(w, "{GREETING} #{n}:");
    for (name, op) in OPS.iter() {
        r = r.and_then(|()| write!(w, " {name}({x})={}", op(x)));
    }
    r = r.and_then(|()| write!(w, " pi={:.3} hex={:#x} {:?}", 3.14159f64, x, Some("dbg")));
    if r.is_ok() { w.len } else { 0 }
}
