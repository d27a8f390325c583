//! The parts of the mount namespace's module: the mountinfo parser, the table's plan and the
//! layers of overlay mounts.
pub mod mountinfo;
pub mod overlay;
pub mod plan;
