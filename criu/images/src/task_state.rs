//! CRIU's task states (`task_core_entry.task_state` of `core-PID.img`).

/// Running (`TASK_ALIVE`).
pub const ALIVE: u32 = 1;
/// Dead: a zombie, saved with its exit code (`TASK_DEAD`).
pub const DEAD: u32 = 2;
/// Job-control stopped (`TASK_STOPPED`).
pub const STOPPED: u32 = 3;
