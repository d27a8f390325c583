//! Where the CRIU 4.2 fixture images are: `CRIU_FIXTURES` if set, else `shared/` beside this
//! checkout, else `/work/shared` (where a clone made elsewhere still finds them).

use std::path::PathBuf;

/// The `criu-4.2` fixture directory; panics naming every place looked at if none exists.
pub fn fixtures() -> PathBuf {
    if let Some(p) = std::env::var_os("CRIU_FIXTURES") {
        return p.into();
    }
    let tried = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/criu-4.2"),
        PathBuf::from("/work/shared/fixtures/criu-4.2"),
    ];
    match tried.iter().find(|p| p.is_dir()) {
        Some(p) => p.clone(),
        None => panic!("fixtures not found at {tried:?} (set CRIU_FIXTURES)"),
    }
}
