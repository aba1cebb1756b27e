//! The `zferry` command.
fn main() {}
