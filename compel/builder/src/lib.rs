//! Build-time half of compel: compile parasite code into position-independent blobs and
//! describe them in generated Rust modules or C headers.
