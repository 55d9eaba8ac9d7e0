//! The daemon's file-descriptor budget: raise the soft `RLIMIT_NOFILE` and size the connection
//! limit to fit under it.
//!
//! Every connection costs one descriptor, and a daemon that runs out of descriptors cannot accept,
//! cannot open the key file and cannot write its cache. Many systems still start services with a
//! soft limit of 1024 while allowing far more (the hard limit), so at start the daemon raises its
//! soft limit to the hard limit, as any process may. It then keeps [`RESERVED`] descriptors for
//! everything that is not a client connection (listeners, the log, the store, the cache, the
//! runtime) and caps `max_connections` to the rest, so the connection limit, not `EMFILE`, is what
//! a flood of clients runs into.

use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

/// Descriptors kept for everything but client connections.
pub const RESERVED: u64 = 64;

/// The soft limit to ask for when the hard limit is "unlimited" (Linux's default `nr_open`).
const UNLIMITED_TARGET: u64 = 1 << 20;

/// The descriptor limits before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit the process started with.
    pub soft_before: u64,
    /// The soft limit now in force.
    pub soft: u64,
    pub hard: u64,
}

impl FdLimit {
    /// How many connections fit: `configured`, capped to the soft limit minus [`RESERVED`]
    /// (at least 1).
    pub fn connection_capacity(&self, configured: usize) -> usize {
        let available = self.soft.saturating_sub(RESERVED).max(1);
        usize::try_from(available).map_or(configured, |available| configured.min(available))
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. When raising fails (a hard limit of
/// "unlimited" above the kernel's `nr_open`, or a sandbox), the limit in force is kept and
/// reported: the daemon still runs, with the connection limit sized to it.
pub fn raise() -> nix::Result<FdLimit> {
    let (soft_before, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let mut limit = FdLimit {
        soft_before,
        soft: soft_before,
        hard,
    };
    let target = if hard == RLIM_INFINITY {
        UNLIMITED_TARGET
    } else {
        hard
    };
    if target > soft_before && setrlimit(Resource::RLIMIT_NOFILE, target, hard).is_ok() {
        limit.soft = target;
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_capped_to_the_descriptors_left() {
        let limit = FdLimit {
            soft_before: 1024,
            soft: 1024,
            hard: 1024,
        };
        assert_eq!(limit.connection_capacity(100), 100);
        assert_eq!(limit.connection_capacity(5000), 1024 - RESERVED as usize);
        let tiny = FdLimit {
            soft_before: 10,
            soft: 10,
            hard: 10,
        };
        assert_eq!(tiny.connection_capacity(1024), 1);
    }

    #[test]
    fn raise_reaches_the_hard_limit_and_never_lowers() {
        // Leaves the process's soft limit at the hard limit: what the daemon does anyway.
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let limit = raise().unwrap();
        assert_eq!(limit.soft_before, soft);
        assert!(limit.soft >= soft);
        assert_eq!(limit.hard, hard);
        if hard != RLIM_INFINITY {
            assert_eq!(limit.soft, hard);
            assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, hard);
        }
    }
}
