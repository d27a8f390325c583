//! `memcpy`, `memmove`, `memset`, `memcmp`, `strlen` & co: the compiler emits calls to the memory
//! functions, and C parasite code calls both kinds. Every loop goes through volatile accesses so
//! that the optimiser cannot turn it back into a call to the function being defined.
//!
//! The C symbols are only defined with `--cfg compel_parasite` (in a parasite); the Rust
//! functions exist everywhere.

use core::ptr::{read_volatile, write_volatile};

/// Copies `n` bytes from `src` to `dst` (which may overlap). Forward copies move 8-byte words
/// when both pointers can be aligned together.
///
/// # Safety
/// Both ranges must be valid for `n` bytes.
pub unsafe fn copy(dst: *mut u8, src: *const u8, n: usize) {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        let mut i = 0;
        if (dst as usize) % 8 == (src as usize) % 8 {
            while i < n && !(dst as usize + i).is_multiple_of(8) {
                // SAFETY: i < n and both ranges are valid for n bytes (caller).
                unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
                i += 1;
            }
            while i + 8 <= n {
                // SAFETY: dst + i and src + i are 8-aligned (same remainder, dst aligned above)
                // and [i, i + 8) is within both ranges (caller). A word read before the write
                // is correct for a forward copy even when the ranges overlap (dst < src).
                unsafe {
                    let w = read_volatile(src.add(i).cast::<u64>());
                    write_volatile(dst.add(i).cast::<u64>(), w);
                }
                i += 8;
            }
        }
        while i < n {
            // SAFETY: i < n and both ranges are valid for n bytes (caller).
            unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
            i += 1;
        }
    } else {
        let mut i = n;
        while i > 0 {
            i -= 1;
            // SAFETY: i < n and both ranges are valid for n bytes (caller).
            unsafe { write_volatile(dst.add(i), read_volatile(src.add(i))) };
        }
    }
}

/// Sets `n` bytes at `dst` to `c`, by 8-byte words where aligned.
///
/// # Safety
/// The range must be valid for `n` bytes.
pub unsafe fn fill(dst: *mut u8, c: u8, n: usize) {
    let mut i = 0;
    while i < n && !(dst as usize + i).is_multiple_of(8) {
        // SAFETY: i < n and the range is valid for n bytes (caller).
        unsafe { write_volatile(dst.add(i), c) };
        i += 1;
    }
    let word = u64::from_ne_bytes([c; 8]);
    while i + 8 <= n {
        // SAFETY: dst + i is 8-aligned and [i, i + 8) is within the range (caller).
        unsafe { write_volatile(dst.add(i).cast::<u64>(), word) };
        i += 8;
    }
    while i < n {
        // SAFETY: i < n and the range is valid for n bytes (caller).
        unsafe { write_volatile(dst.add(i), c) };
        i += 1;
    }
}

/// Compares `n` bytes: negative, zero or positive like C's `memcmp`.
///
/// # Safety
/// Both ranges must be valid for `n` bytes.
pub unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and both ranges are valid for n bytes (caller).
        let (x, y) = unsafe { (read_volatile(a.add(i)), read_volatile(b.add(i))) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// The length of the NUL-terminated string at `s`, looking at most `max` bytes.
///
/// # Safety
/// `s` must be readable up to its terminator or `max` bytes.
pub unsafe fn str_len(s: *const u8, max: usize) -> usize {
    let mut i = 0;
    // SAFETY: every byte up to the terminator (or max) is readable (caller).
    while i < max && unsafe { read_volatile(s.add(i)) } != 0 {
        i += 1;
    }
    i
}

/// Compares two NUL-terminated strings, at most `max` bytes, like C's `strncmp`.
///
/// # Safety
/// Both strings must be readable up to their terminator or `max` bytes.
pub unsafe fn str_compare(a: *const u8, b: *const u8, max: usize) -> i32 {
    let mut i = 0;
    while i < max {
        // SAFETY: neither string has ended before i (checked below), so byte i is readable.
        let (x, y) = unsafe { (read_volatile(a.add(i)), read_volatile(b.add(i))) };
        if x != y || x == 0 {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

#[cfg(compel_parasite)]
mod c {
    use core::ffi::c_char;

    /// C `memcpy`.
    ///
    /// # Safety
    /// As C's.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the C contract: both ranges valid for n bytes.
        unsafe { super::copy(dst, src, n) };
        dst
    }

    /// C `memmove`.
    ///
    /// # Safety
    /// As C's.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
        // SAFETY: the C contract: both ranges valid for n bytes; copy handles overlap.
        unsafe { super::copy(dst, src, n) };
        dst
    }

    /// C `memset`.
    ///
    /// # Safety
    /// As C's.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
        // SAFETY: the C contract: the range is valid for n bytes.
        unsafe { super::fill(dst, c as u8, n) };
        dst
    }

    /// C `memcmp`.
    ///
    /// # Safety
    /// As C's.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the C contract: both ranges valid for n bytes.
        unsafe { super::compare(a, b, n) }
    }

    /// C `bcmp`.
    ///
    /// # Safety
    /// As C's.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
        // SAFETY: the C contract: both ranges valid for n bytes.
        unsafe { super::compare(a, b, n) }
    }

    /// C `strlen`.
    ///
    /// # Safety
    /// As C's.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn strlen(s: *const c_char) -> usize {
        // SAFETY: the C contract: s is NUL-terminated.
        unsafe { super::str_len(s.cast(), usize::MAX) }
    }

    /// C `strnlen`.
    ///
    /// # Safety
    /// As C's.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn strnlen(s: *const c_char, max: usize) -> usize {
        // SAFETY: the C contract: s is readable to its terminator or max bytes.
        unsafe { super::str_len(s.cast(), max) }
    }

    /// C `strcmp`.
    ///
    /// # Safety
    /// As C's.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn strcmp(a: *const c_char, b: *const c_char) -> i32 {
        // SAFETY: the C contract: both are NUL-terminated.
        unsafe { super::str_compare(a.cast(), b.cast(), usize::MAX) }
    }

    /// C `strncmp`.
    ///
    /// # Safety
    /// As C's.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn strncmp(a: *const c_char, b: *const c_char, n: usize) -> i32 {
        // SAFETY: the C contract: both readable to their terminator or n bytes.
        unsafe { super::str_compare(a.cast(), b.cast(), n) }
    }

    /// C `strchr`.
    ///
    /// # Safety
    /// As C's.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn strchr(s: *const c_char, c: i32) -> *mut c_char {
        let mut p = s;
        loop {
            // SAFETY: p has not passed the terminator of a NUL-terminated string (C contract).
            let ch = unsafe { core::ptr::read_volatile(p) } as u8;
            if ch == c as u8 {
                return p.cast_mut();
            }
            if ch == 0 {
                return core::ptr::null_mut();
            }
            // SAFETY: ch was not the terminator, so the next byte is still in the string.
            p = unsafe { p.add(1) };
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    #[test]
    fn copy_and_fill_every_alignment_and_overlap() {
        for len in [0usize, 1, 7, 8, 9, 31, 64, 100] {
            for so in 0..9 {
                for d in 0..9 {
                    let src: Vec<u8> = (0..len as u32 + 16).map(|i| (i * 7 + 1) as u8).collect();
                    let mut dst = std::vec![0u8; len + 16];
                    // SAFETY: both buffers hold len + 16 > offset + len bytes.
                    unsafe { super::copy(dst.as_mut_ptr().add(d), src.as_ptr().add(so), len) };
                    assert_eq!(&dst[d..d + len], &src[so..so + len]);
                    assert!(
                        dst[..d].iter().all(|&b| b == 0) && dst[d + len..].iter().all(|&b| b == 0)
                    );

                    // Overlapping, both directions, like memmove.
                    let mut buf = src.clone();
                    let mut want = src.clone();
                    want.copy_within(so..so + len, d);
                    // SAFETY: offsets + len stay inside buf.
                    unsafe { super::copy(buf.as_mut_ptr().add(d), buf.as_ptr().add(so), len) };
                    assert_eq!(buf, want, "len {len} src {so} dst {d}");
                }
            }
            let mut buf = std::vec![1u8; len + 16];
            // SAFETY: 3 + len < len + 16.
            unsafe { super::fill(buf.as_mut_ptr().add(3), 0xab, len) };
            assert!(buf[3..3 + len].iter().all(|&b| b == 0xab));
            assert!(buf[..3].iter().all(|&b| b == 1) && buf[3 + len..].iter().all(|&b| b == 1));
        }
    }
}
