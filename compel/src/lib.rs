//! compel's host-side runtime: seize a live task, run syscalls and parasite code inside it,
//! and cure it so that it runs on untouched.
