//! `agt completions SHELL`: a completion script, made locally (no daemon needed).

use super::{Cli, CliResult};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell
    pub shell: Shell,
}

pub fn run(args: CompletionsArgs) -> CliResult {
    let mut cmd = Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "agt", &mut std::io::stdout());
    Ok(())
}
