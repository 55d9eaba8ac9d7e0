//! heare-authd: the local API-key verification daemon, as a library.
//!
//! The binary (`main.rs`) only parses the command line and calls [`daemon::run`]. Everything else
//! lives here so that `heare-authctl`, the end-to-end tests and the benchmark share one key model
//! and one store: `codec` (encryption at rest), `keyset` (the in-memory index verify reads),
//! `store` (S3 and file backends), `config`, and the serving side (`server`, `reload`, `notify`,
//! `logging`).

pub mod cache;
pub mod cli;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod generation;
pub mod keyfile;
pub mod keyset;
pub mod log_writer;
pub mod logging;
mod minify;
pub mod notify;
pub mod reload;
pub mod reload_request;
pub mod safe_file;
pub mod server;
pub mod state;
pub mod store;
pub mod timestamp;
pub mod verify_input;
