//! The parts of the mount namespace's module: the mountinfo parser and the table's plan.
pub mod mountinfo;
pub mod plan;
