//! heare-authd: the local API-key verification daemon, as a library.
//!
//! The binary (`main.rs`) only parses the command line and calls [`daemon::run`]. Everything else
//! lives here so that `heare-authctl`, the end-to-end tests and the benchmark share one key model
//! and one store: `codec` (encryption at rest), `keyset` (the in-memory index verify reads),
//! `keyfile` (the document ctl rewrites, keeping what it does not understand), `store` (S3 and
//! file backends), `config`, and the serving side (`server`, `reload`, `notify`, `logging`).

pub mod cli;
pub mod codec;
pub mod config;
pub mod duration;
pub mod keyset;
mod minify;
pub mod store;
pub mod timestamp;
