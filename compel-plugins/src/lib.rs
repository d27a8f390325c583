//! Code linked into parasites (layer: above `compel-arch`, `no_std`): `std`, `fds`, `shmem`.
#![no_std]
