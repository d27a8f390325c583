//! What a task is doing, seen from outside before it is seized.

use crate::{TaskError, proc};

/// What a task is doing, as seen from outside without touching it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Running or sleeping (also blocked in a syscall).
    Running,
    /// Job-control stopped (`SIGSTOP`, `SIGTSTP`, ...).
    Stopped,
    /// Traced by another process.
    Traced {
        /// The tracer.
        tracer: i32,
    },
    /// Exited, not yet reaped.
    Zombie,
    /// Gone (or never existed).
    Dead,
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskState::Running => f.write_str("running"),
            TaskState::Stopped => f.write_str("stopped"),
            TaskState::Traced { tracer } => write!(f, "traced by {tracer}"),
            TaskState::Zombie => f.write_str("zombie"),
            TaskState::Dead => f.write_str("dead"),
        }
    }
}

/// Classifies task `pid` from `/proc` without touching it.
///
/// # Errors
/// If `/proc/PID` exists but cannot be read.
pub fn classify(pid: i32) -> Result<TaskState, TaskError> {
    if pid <= 0 {
        return Ok(TaskState::Dead);
    }
    let letter = match proc::state_letter(pid) {
        Ok(c) => c,
        Err(TaskError::NoSuchTask { .. }) => return Ok(TaskState::Dead),
        Err(e) => return Err(e),
    };
    match letter {
        'Z' => return Ok(TaskState::Zombie),
        'X' | 'x' => return Ok(TaskState::Dead),
        _ => {}
    }
    let tracer = match proc::tracer_pid(pid) {
        Ok(t) => t,
        Err(TaskError::NoSuchTask { .. }) => return Ok(TaskState::Dead),
        Err(e) => return Err(e),
    };
    Ok(if tracer != 0 {
        TaskState::Traced { tracer }
    } else if letter == 'T' {
        TaskState::Stopped
    } else {
        TaskState::Running
    })
}
