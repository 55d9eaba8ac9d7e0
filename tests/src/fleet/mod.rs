//! The fleet simulation (issue 16): how fast a revocation reaches every daemon of a fleet, and
//! what the fleet costs at S3 and SQS, in polling and in push mode.
//!
//! `moto` runs one moto server (S3, SNS and SQS); `push` wires the key file's bucket to one SQS
//! queue per daemon through SNS.
pub mod moto;
pub mod push;
