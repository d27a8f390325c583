//! The shared library records its name (SONAME `libsoccr.so`), as a library installed under
//! /usr/lib must (Debian policy; the dynamic linker and ldconfig go by it).
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libsoccr.so");
}
