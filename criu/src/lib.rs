//! criu: checkpoint/restore of Linux process trees, built as one consumer of compel.

pub mod restore;
