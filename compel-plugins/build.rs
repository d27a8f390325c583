//! Declares `cfg(compel_parasite)`, which compel's builder sets when it compiles this crate
//! into a parasite (cargo never does).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(compel_parasite)");
}
