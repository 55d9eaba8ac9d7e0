//! `heare-authctl`: manage heare-auth keys in the store and reload the local daemon.
//! Exit codes: 0 ok, 1 error, 2 usage, 3 key not found, 4 conflict after retries.

mod author;
mod cli;
mod commands;
mod commit;
mod context;
mod daemon_link;
mod error;
mod keyview;
mod report_reader;
mod secrets;
mod usage_source;
mod validate;

use clap::Parser;
use cli::{Cli, Command};
use commands::{
    changes, create, delete, generate, import, lifecycle, list, rate_limit, remote, rotate, usage,
};
use context::Context;
use error::CtlError;
use std::process::ExitCode;

fn main() -> ExitCode {
    restore_sigpipe();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("heare-authctl: cannot start: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("heare-authctl: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Rust ignores SIGPIPE, so printing to a pipe whose reader has gone (`heare-authctl list | head
/// -1`) would panic; with the default action the process ends quietly, as other tools do.
fn restore_sigpipe() {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: SIG_DFL installs no handler of ours; nothing else in this process has changed
    // SIGPIPE's disposition or depends on it, and no thread has started yet.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

async fn run(cli: Cli) -> Result<(), CtlError> {
    match &cli.command {
        Command::GenCompletions { shell } => {
            generate::completions(*shell);
            return Ok(());
        }
        Command::GenMan => return generate::man().map_err(|e| CtlError::Other(e.to_string())),
        _ => {}
    }
    let context = Context::open(
        cli.config.clone(),
        cli.store.clone(),
        cli.socket.clone(),
        cli.accept_older,
        &cli.lock_timeout,
        cli.reason.clone(),
    )
    .await?;
    match cli.command {
        Command::Create(args) => create::run(&context, &args).await,
        Command::List { detailed, json } => list::list(&context, detailed, json).await,
        Command::Show { key_id, json } => list::show(&context, &key_id, json).await,
        Command::Delete { key_id, yes, write } => {
            delete::run(&context, &key_id, yes, write.no_reload).await
        }
        Command::Rotate {
            key_id,
            grace,
            json,
            write,
        } => rotate::run(&context, &key_id, &grace, json, write.no_reload).await,
        Command::Expire {
            key_id,
            at,
            now,
            force,
            write,
        } => {
            lifecycle::expire(
                &context,
                &key_id,
                at.as_deref(),
                now,
                force,
                write.no_reload,
            )
            .await
        }
        Command::Scopes {
            key_id,
            add,
            remove,
            write,
        } => lifecycle::scopes(&context, &key_id, &add, &remove, write.no_reload).await,
        Command::RateLimit {
            key_id,
            limit,
            burst,
            write,
        } => rate_limit::run(&context, &key_id, &limit, burst, write.no_reload).await,
        Command::Disable { key_id, write } => {
            lifecycle::set_disabled(&context, &key_id, true, write.no_reload).await
        }
        Command::Enable { key_id, write } => {
            lifecycle::set_disabled(&context, &key_id, false, write.no_reload).await
        }
        Command::Import { file, write } => import::import(&context, &file, write.no_reload).await,
        Command::Migrate {
            hash_secrets,
            encrypt,
            yes,
            write,
        } => {
            let migration = import::Migration {
                hash_secrets,
                encrypt,
                yes,
            };
            import::migrate(&context, migration, write.no_reload).await
        }
        Command::Log {
            since,
            from,
            key,
            json,
        } => {
            let args = changes::LogArgs {
                since,
                from,
                key,
                json,
            };
            changes::log(&context, &args).await
        }
        Command::Compact {
            keep,
            drop_invalid,
            yes,
        } => {
            let args = changes::CompactArgs {
                keep,
                drop_invalid,
                yes,
            };
            changes::compact(&context, &args).await
        }
        Command::Reload { signal, pid } => remote::reload(context.socket(), signal, pid),
        Command::Status { json } => remote::status(context.socket(), json),
        Command::Usage {
            unused_for,
            json,
            fleet,
            detailed,
            max_bytes,
        } => {
            let args = usage::UsageArgs {
                unused_for,
                json,
                fleet,
                detailed,
                max_bytes,
            };
            usage::run(&context, &args).await
        }
        Command::GenCompletions { .. } | Command::GenMan => Ok(()),
    }
}
