//! x86_64.

/// The name of this architecture as CRIU's images spell it.
pub const ARCH_NAME: &str = "x86_64";
