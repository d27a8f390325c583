//! `criu restore`: bring a dumped process back from its images.
