//! Fleet-wide rate limits: the decisions of a Redis that every daemon of the fleet shares.

pub mod fleet;
pub mod redis;
