//! heare-auth-client: talk to the local `heare-authd` daemon.
//!
//! This crate owns the daemon's wire format ([`wire`]): every request and response body is
//! defined here once, and both the daemon (which writes them) and the clients (which read them)
//! use these types, so the two sides cannot drift apart. The clients themselves — one blocking
//! call to verify a secret, an async client, a C ABI — build on these types.

pub mod token;
pub mod transport;
pub mod wire;

/// Where `heare-authd` listens unless configured otherwise (systemd's `RuntimeDirectory`).
pub const DEFAULT_SOCKET_PATH: &str = "/run/heare-auth/heare-authd.sock";

/// Environment variable that overrides [`DEFAULT_SOCKET_PATH`] for clients.
pub const SOCKET_PATH_ENV: &str = "HEARE_AUTH_SOCKET";
