//! Helpers shared by the integration tests: spawning victims, a subreaper, a process-wide lock.
