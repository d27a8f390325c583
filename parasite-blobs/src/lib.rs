//! The parasites compel and criu ship, built at build time into position-independent blobs.
