//! heare-auth-client: verify API keys against the local `heare-authd` daemon.
//!
//! ```no_run
//! match heare_auth_client::verify("sec_…") {
//!     Ok(key) => println!("caller is {} ({})", key.name, key.key_id),
//!     Err(heare_auth_client::Error::InvalidKey) => println!("refused"),
//!     Err(other) => eprintln!("cannot verify: {other}"),
//! }
//! ```
//!
//! This crate also owns the daemon's wire format ([`wire`]): every request and response body is
//! defined here once, and both the daemon (which writes them) and the clients (which read them)
//! use these types, so the two sides cannot drift apart. [`token`] is the secret format and its
//! checksum; [`transport`] is the std-only HTTP/1.1 exchange the blocking client uses.
//!
//! Security defaults: the socket comes from `$HEARE_AUTH_SOCKET` only in a process that may trust
//! its environment (never in a setuid/setgid one, see [`default_socket_path`]); one deadline (the
//! client's timeout) bounds connecting, sending and reading; and
//! [`ClientBuilder::server_uids`] makes the client check who serves the socket before it sends a
//! secret.

#![deny(missing_docs)]

pub mod blocking;
mod default_socket;
mod error;
#[cfg(feature = "async")]
pub mod nonblocking;
pub mod token;
pub mod transport;
pub mod wire;

pub use blocking::{Client, ClientBuilder, Verified};
pub use default_socket::{default_socket_path, environment_is_trusted};
pub use error::Error;
#[cfg(feature = "async")]
pub use nonblocking::AsyncClient;

/// Where `heare-authd` listens unless configured otherwise (systemd's `RuntimeDirectory`).
pub const DEFAULT_SOCKET_PATH: &str = "/run/heare-auth/heare-authd.sock";

/// Environment variable that overrides [`DEFAULT_SOCKET_PATH`] for clients, except in setuid/setgid
/// processes, which ignore it (see [`default_socket_path`]).
pub const SOCKET_PATH_ENV: &str = "HEARE_AUTH_SOCKET";

/// Verifies `secret` with the daemon on the default socket ([`default_socket_path`]:
/// `$HEARE_AUTH_SOCKET` unless setuid, else [`DEFAULT_SOCKET_PATH`]). Blocking; opens one connection per call — keep a [`Client`] to reuse
/// one.
pub fn verify(secret: &str) -> Result<Verified, Error> {
    Client::builder().build().verify(secret)
}
