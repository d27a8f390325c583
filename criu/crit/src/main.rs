//! `crit`: decode, encode and explore CRIU checkpoint images.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
