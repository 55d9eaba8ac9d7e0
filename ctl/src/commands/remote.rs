//! `reload` and `status`: talking to the running daemon.

use crate::daemon_link;
use crate::error::CtlError;
use crate::keyview::shown;
use heare_auth_client::wire::{ListenerStatus, NotifyStatus};
use std::path::Path;

pub fn reload(socket: &Path, signal: bool, pid: Option<i32>) -> Result<(), CtlError> {
    if signal {
        let pid = daemon_link::signal(pid)?;
        println!("sent SIGHUP to heare-authd (pid {pid})");
    } else {
        let keys = daemon_link::refresh(socket)?;
        println!("heare-authd reloaded: {keys} keys");
    }
    Ok(())
}

pub fn status(socket: &Path, json: bool) -> Result<(), CtlError> {
    let status = daemon_link::status(socket)?;
    if json {
        println!("{}", serde_json::to_string(&status).unwrap_or_default());
        return Ok(());
    }
    // Errors and warnings quote key ids from the store: escaped like every table cell.
    let or_dash = |v: &Option<String>| v.as_deref().map_or_else(|| "-".into(), shown);
    println!("heare-authd {}", status.daemon_version);
    println!("  keys loaded:   {}", status.keys_loaded);
    println!("  store:         {}", status.store);
    println!("  version:       {}", or_dash(&status.store_version));
    println!(
        "  source:        {}{}",
        status.source,
        if status.stale { " (STALE)" } else { "" }
    );
    println!("  last load:     {}", or_dash(&status.last_load_at));
    println!("  last attempt:  {}", or_dash(&status.last_attempt_at));
    println!("  last error:    {}", or_dash(&status.last_error));
    if let Some(error) = &status.cache_error {
        println!("  cache error:   {}", shown(error));
    }
    if let Some(generation) = status.generation_served {
        println!("  generation:    {generation}");
    }
    println!("  uptime:        {} s", status.uptime_seconds);
    if !status.verify_results.is_empty() {
        let total: u64 = status.verify_results.iter().map(|(_, n)| n).sum();
        let by_result: Vec<String> = status
            .verify_results
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(result, n)| format!("{} {n}", shown(result)))
            .collect();
        let detail = match by_result.is_empty() {
            true => String::new(),
            false => format!(" ({})", by_result.join(", ")),
        };
        println!("  verifies:      {total} since start{detail}");
    }
    if let Some(notify) = &status.notify {
        print_notify(notify);
    }
    for listener in &status.listeners {
        print_listener(listener);
    }
    for warning in &status.load_warnings {
        println!("  warning:       {}", shown(warning));
    }
    Ok(())
}

/// A listener's line, and its bind error while it fails (another process holds its address).
fn print_listener(listener: &ListenerStatus) {
    let failing = listener.state == "failing";
    let state = if failing {
        "FAILING".to_string()
    } else {
        shown(&listener.state)
    };
    println!(
        "  listener:      {} {} ({state})",
        shown(&listener.name),
        shown(&listener.address)
    );
    if failing && let Some(error) = &listener.error {
        println!("  bind error:    {}", shown(error));
    }
}

/// The notify queue's lines: the queue, whether it answers, and its last error if it does not.
fn print_notify(notify: &NotifyStatus) {
    let failing = notify.state == "failing";
    let state = if failing {
        "FAILING".to_string()
    } else {
        shown(&notify.state)
    };
    println!("  notify queue:  {} ({state})", shown(&notify.queue));
    if failing && let Some(error) = &notify.last_error {
        println!("  queue error:   {}", shown(error));
    }
}
