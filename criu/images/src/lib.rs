//! CRIU's on-disk image format (layer: data, no unsafe).
#![forbid(unsafe_code)]
