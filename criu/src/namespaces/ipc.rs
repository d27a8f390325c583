//! IPC namespaces: placeholder, filled in below.
