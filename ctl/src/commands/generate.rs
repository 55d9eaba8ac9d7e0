//! `gen-completions SHELL` and `gen-man`: generated from the clap definitions, for packaging.

use crate::cli::Cli;
use clap::CommandFactory;

pub fn completions(shell: clap_complete::Shell) {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "heare-authctl",
        &mut std::io::stdout(),
    );
}

pub fn man() -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())
}
