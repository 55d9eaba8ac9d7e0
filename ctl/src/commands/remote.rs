//! `reload` and `status`: talking to the running daemon.

use crate::daemon_link;
use crate::error::CtlError;
use crate::keyview::shown;
use heare_auth_client::wire::{ListenerStatus, NotifyStatus, StatusResponse};
use heare_auth_store::timestamp;
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
    println!("{}", summary(&status, timestamp::now()));
    println!("heare-authd {}", shown(&status.daemon_version));
    println!("  keys loaded:   {}", status.keys_loaded);
    println!("  store:         {}", shown(&status.store));
    println!("  version:       {}", or_dash(&status.store_version));
    println!(
        "  source:        {}{}",
        shown(&status.source),
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
    if let Some(seq) = status.change_seq {
        println!(
            "  change log:    change {seq} ({} keys changed since the key object was loaded)",
            status.overlay_keys
        );
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

/// The first line of `status`: in words, whether all is well (`OK: serving N keys, fresh, last
/// reload …, every listener up`), or `ATTENTION:` followed by what is not.
fn summary(status: &StatusResponse, now: timestamp::UnixMillis) -> String {
    let keys = match status.keys_loaded {
        1 => "serving 1 key".to_string(),
        n => format!("serving {n} keys"),
    };
    let when = match &status.last_load_at {
        Some(at) => format!("last reload {}{}", shown(at), ago(at, now)),
        None => "never loaded from the store".to_string(),
    };
    let problems = problems(status);
    if problems.is_empty() {
        return format!("OK: {keys}, fresh, {when}, every listener up");
    }
    format!("ATTENTION: {keys}, {when}; {}", problems.join("; "))
}

/// What `summary` names as not well, in the order an operator would look at it.
fn problems(status: &StatusResponse) -> Vec<String> {
    let mut problems = Vec::new();
    if status.stale {
        problems.push(format!(
            "STALE (serving the set from {})",
            shown(&status.source)
        ));
    }
    if let Some(error) = &status.last_error {
        problems.push(format!("last load failed: {}", shown(error)));
    }
    for listener in status.listeners.iter().filter(|l| l.state != "listening") {
        problems.push(format!(
            "listener {} {} {}",
            shown(&listener.name),
            shown(&listener.address),
            shown(&listener.state).to_uppercase()
        ));
    }
    if let Some(notify) = status.notify.as_ref().filter(|n| n.state == "failing") {
        problems.push(format!("notify queue {} FAILING", shown(&notify.queue)));
    }
    if status.cache_error.is_some() {
        problems.push("last-known-good cache not written".to_string());
    }
    match status.load_warnings.len() {
        0 => {}
        1 => problems.push("1 key skipped".to_string()),
        n => problems.push(format!("{n} keys skipped")),
    }
    problems
}

/// ` (5 min ago)` for an RFC 3339 time before `now`; nothing for one that cannot be read.
fn ago(at: &str, now: timestamp::UnixMillis) -> String {
    let Ok(then) = timestamp::parse(at) else {
        return String::new();
    };
    let seconds = now.saturating_sub(then).max(0) / 1000;
    let span = match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        3600..86400 => format!("{} h", seconds / 3600),
        _ => format!("{} d", seconds / 86400),
    };
    format!(" ({span} ago)")
}
