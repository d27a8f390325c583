//! The errors and checks every reader of an image shares: an unreadable image, a contradiction
//! in one, a path from one, the kind-specific part of a file entry. A leaf: the per-kind file
//! modules ([`crate::files`]) use it without depending on the plan that holds their results.

use std::ffi::CString;

use criu_images::names;

use super::super::error::RestoreError;

pub(crate) fn img(file: &str, e: criu_images::ImageError) -> RestoreError {
    RestoreError::Image {
        file: file.to_string(),
        error: e,
    }
}

pub(crate) fn bad(file: &str, reason: impl Into<String>) -> RestoreError {
    RestoreError::BadImage {
        file: file.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn cpath(s: &str) -> Result<CString, RestoreError> {
    // A path from an image never climbs: '..' could lead a restore (and the ghost files it
    // makes) anywhere.
    if std::path::Path::new(s)
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(bad("files.img", format!("path {s:?} has a '..' component")));
    }
    CString::new(s.as_bytes()).map_err(|_| bad("files.img", format!("path {s:?} holds a NUL byte")))
}
/// The kind-specific part of descriptor `fd`'s file entry (`what` names it in the error).
pub(crate) fn kind_entry<'a, T>(
    part: &'a Option<T>,
    fd: i32,
    what: &str,
) -> Result<&'a T, RestoreError> {
    part.as_ref()
        .ok_or_else(|| bad(names::FILES, format!("fd {fd}: no {what} entry")))
}
