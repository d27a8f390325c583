//! Time namespaces: placeholder, filled in below.
