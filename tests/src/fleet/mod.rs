//! The fleet simulation of issue 16: how fast a revocation made with `heare-authctl delete`
//! reaches every daemon of a fleet, and what the fleet costs at S3 and SQS, in polling mode
//! (`refresh_interval`) and push mode (S3 → SNS → one SQS queue per daemon), with an S3 outage
//! in the middle. The `heare-auth-fleet-sim` binary drives it; `tests/tests/fleet_sim.rs` runs a
//! small version in CI.
//!
//! `moto` runs one moto server (S3, SNS and SQS); `push` wires the key file's bucket to one queue
//! per daemon; `counting_proxy` stands between the daemons and moto, counting requests by
//! `classify`'s classes and playing the outage; `daemons` runs the real `heare-authd` processes
//! and `heare-authctl`; `probe` watches each revocation spread; `scenario` runs one mode's
//! timeline; `report` turns the record into figures, a table, an extrapolation and JSON.

pub mod classify;
pub mod counting_proxy;
pub mod daemons;
pub mod moto;
pub mod probe;
pub mod push;
pub mod report;
pub mod scenario;
