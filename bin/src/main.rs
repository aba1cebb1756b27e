//! The `zferry` command.

mod cmd_test;

use clap::Parser;

/// zferry: ZFS snapshot replication.
#[derive(Debug, Parser)]
#[command(name = "zferry", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Diagnostics that check one piece of zferry against your input.
    Test(cmd_test::Args),
}

fn main() -> std::process::ExitCode {
    match Cli::parse().command {
        Command::Test(args) => cmd_test::run(args),
    }
}
