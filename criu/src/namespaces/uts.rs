//! UTS namespaces: the host and domain name (`utsns-ID.img`, one `utsns_entry`).
//!
//! Dump: `uname` in a thread that entered the root's namespace. Restore: a thread makes a new
//! namespace and sets both names; the engine enters it around the clone of the root.
// Unsafe code: uname, sethostname, setdomainname on live buffers.
#![allow(unsafe_code)]

use criu_images::magic;
use criu_images::names;
use criu_images::pb::UtsnsEntry;
use nix::errno::Errno;

use super::{DumpCtx, Kind, NsError, NsOps, Rebuilt, RestoreCtx};

/// The UTS kind's operations.
pub(crate) static OPS: NsOps = NsOps {
    kind: Kind::Uts,
    nested: false,
    dump,
    restore,
};

/// A NUL-terminated field of `struct utsname` as a string.
fn field(raw: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = raw
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The calling thread's host and domain name.
fn names_here() -> Result<UtsnsEntry, NsError> {
    // SAFETY: utsname is plain data; uname fills the live local.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname fills the live local `u`.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Err(NsError::sys(Kind::Uts, "uname", Errno::last()));
    }
    Ok(UtsnsEntry {
        nodename: field(&u.nodename),
        domainname: field(&u.domainname),
    })
}

fn dump(ctx: &DumpCtx<'_>) -> Result<(), NsError> {
    let e = super::in_ns_of(ctx.pid, &[Kind::Uts], names_here)?;
    tracing::info!(id = ctx.id, host = %e.nodename, domain = %e.domainname, "uts namespace");
    let file = names::utsns(ctx.id);
    criu_images::write_all(ctx.dir.join(&file), magic::UTSNS, [&e])
        .map_err(|e| NsError::image(Kind::Uts, file, e))
}

/// Sets the calling thread's host and domain name.
fn set_names(e: &UtsnsEntry) -> Result<(), NsError> {
    let (h, d) = (e.nodename.as_bytes(), e.domainname.as_bytes());
    // SAFETY: both calls read `len` bytes of a live slice.
    if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } != 0 {
        return Err(NsError::sys(
            Kind::Uts,
            format!("sethostname {:?}", e.nodename),
            Errno::last(),
        ));
    }
    // SAFETY: setdomainname reads `d.len()` bytes of the live slice `d`.
    if unsafe { libc::setdomainname(d.as_ptr().cast(), d.len()) } != 0 {
        return Err(NsError::sys(
            Kind::Uts,
            format!("setdomainname {:?}", e.domainname),
            Errno::last(),
        ));
    }
    Ok(())
}

fn restore(ctx: &RestoreCtx<'_>) -> Result<Rebuilt, NsError> {
    let file = names::utsns(ctx.id);
    let e: UtsnsEntry = criu_images::read_single(ctx.dir.join(&file), magic::UTSNS)
        .map_err(|e| NsError::image(Kind::Uts, file.clone(), e))?;
    // The kernel's limit for both (__NEW_UTS_LEN).
    for (what, v) in [("nodename", &e.nodename), ("domainname", &e.domainname)] {
        if v.len() > 64 {
            return Err(NsError::bad(
                Kind::Uts,
                file,
                format!("{what} longer than 64 bytes"),
            ));
        }
    }
    let (_, mut fds) = super::in_fresh_ns(&[Kind::Uts], move || set_names(&e))?;
    Ok(Rebuilt {
        join: fds.pop(),
        ..Rebuilt::default()
    })
}
