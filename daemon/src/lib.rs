//! heare-authd: the local API-key verification daemon, as a library.
//!
//! The binary (`main.rs`) parses the command line ([`cli`]), resolves the configuration
//! ([`config`]), sets up [`logging`] and calls [`daemon::run`]. Those are public because the binary
//! and heare-authctl (which reads the daemon's configuration) use them; [`keyset`],
//! [`verify_input`] and [`redact`] are public for the fuzz targets, the property tests and the load example.
//! Everything else is the daemon's own. The key file and its stores live in the
//! `heare-auth-store` crate, shared with heare-authctl.

pub mod access_log;
mod cache;
mod change_follow;
pub mod change_queue;
pub mod cli;
pub mod config;
pub mod daemon;
mod generation;
mod json_line;
pub mod keyset;
mod log_writer;
pub mod logging;
mod metrics;
mod minify;
mod notify;
mod ports;
pub mod rate_limit;
pub mod redact;
mod reload;
mod reload_request;
mod schedule;
mod server;
mod state;
mod stats;
mod store_watch;
mod usage;
pub mod verify_input;
