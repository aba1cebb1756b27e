//! The `zferry` command: the daemon (later) and the tools that answer a user's questions about
//! replication from plain listings, without touching a pool.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd_demo;
mod cmd_plan;
mod cmd_prune;
mod cmd_stdinserver;
mod cmd_test;
mod input;
mod text;

/// zferry: ZFS snapshot replication.
#[derive(Debug, Parser)]
#[command(name = "zferry", version, about, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run zferry's main job (push to a sink, with snapshotting and pruning) on simulated pools
    /// in virtual time, with seeded faults; prints status and a verdict. Touches no real pool.
    Demo(cmd_demo::Args),
    /// Show what replication would send, or why it cannot, from two `zfs list` listings.
    Plan(cmd_plan::Args),
    /// Show which snapshots zrepl-style keep rules would destroy (dry runs only).
    Prune(cmd_prune::Args),
    /// The forced command of the `ssh+stdinserver` transport (for `authorized_keys`).
    Stdinserver(cmd_stdinserver::Args),
    /// Diagnostics that check one piece of zferry against your input.
    Test(cmd_test::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo(args) => cmd_demo::run(&args),
        Command::Plan(args) => cmd_plan::run(&args),
        Command::Prune(args) => cmd_prune::run(&args),
        Command::Stdinserver(args) => cmd_stdinserver::run(args),
        Command::Test(args) => cmd_test::run(args),
    }
}
