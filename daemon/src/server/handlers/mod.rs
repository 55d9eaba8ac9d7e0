//! One module per endpoint; each turns a request into a JSON answer.

pub mod forward_auth;
pub mod health;
pub mod logged;
pub mod metrics;
pub mod rate_limited;
pub mod refresh;
pub mod status;
pub mod usage;
pub mod verify;
