//! The errno an RPC reply (`cr_errno`) carries for the errors of the layers under the engine:
//! the OS error where one is carried, `EBADMSG` for an image that does not decode, `ESRCH` for a
//! task that is gone, `EPERM` where criu lacks a privilege.

use compel::TaskError;
use criu_images::ImageError;

/// The error and its causes on one line (an RPC reply's message, a failed dump's marker).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The OS error of `e`, or `EIO` when it carries none.
pub(crate) fn io(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The errno of an image error: the OS error of a failed read or write, `EBADMSG` for content
/// that is not a valid image.
pub(crate) fn image(e: &ImageError) -> i32 {
    match e {
        ImageError::Io { source, .. } => io(source),
        ImageError::UnknownMagic { .. }
        | ImageError::WrongMagic { .. }
        | ImageError::Truncated { .. }
        | ImageError::Decode { .. }
        | ImageError::Missing { .. }
        | ImageError::Invalid { .. } => libc::EBADMSG,
    }
}

/// The errno of a task-control error: `ESRCH` for a task that is gone, the kernel's error of a
/// failed request, `EPERM` for a privilege criu lacks.
pub(crate) fn task(e: &TaskError) -> i32 {
    match e {
        TaskError::NoSuchTask { .. } | TaskError::Zombie { .. } | TaskError::Died { .. } => {
            libc::ESRCH
        }
        TaskError::TracedByOther { .. } => libc::EBUSY,
        TaskError::PermissionDenied { source, .. }
        | TaskError::Ptrace { source, .. }
        | TaskError::Wait { source, .. } => *source as i32,
        TaskError::SeccompNeedsCapSysAdmin { .. } => libc::EPERM,
        TaskError::Memory { source, .. } | TaskError::Proc { source, .. } => io(source),
        TaskError::Unsupported { .. } => libc::EOPNOTSUPP,
        TaskError::NotOurThread { .. }
        | TaskError::UnexpectedStop { .. }
        | TaskError::NoSyscallSite { .. }
        | TaskError::XsaveSize { .. } => libc::EIO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_errors_say_bad_message_unless_the_os_failed() {
        let bad = ImageError::Missing {
            file: "core-1.img".into(),
            offset: 0,
            message: "core",
        };
        assert_eq!(image(&bad), libc::EBADMSG);
        let os = ImageError::Io {
            file: "core-1.img".into(),
            op: "open",
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(image(&os), libc::ENOENT);
    }

    #[test]
    fn task_errors_say_which_task_or_request_failed() {
        assert_eq!(task(&TaskError::NoSuchTask { pid: 1 }), libc::ESRCH);
        let denied = TaskError::PermissionDenied {
            pid: 1,
            source: nix::errno::Errno::EPERM,
        };
        assert_eq!(task(&denied), libc::EPERM);
        let custom = std::io::Error::other("no os error");
        assert_eq!(io(&custom), libc::EIO);
    }
}
