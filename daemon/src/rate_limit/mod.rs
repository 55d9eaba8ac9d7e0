//! Fleet-wide rate limits: the decisions of a Redis that every daemon of the fleet shares.
//!
//! Public for the end-to-end tests: `tests/tests/redis_limiter.rs` drives [`redis::RedisLimiter`]
//! against a real redis-server.

pub mod fleet;
pub mod redis;
