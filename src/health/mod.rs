//! Per-peer health: outlier ejection and circuit breaking, active checks, and balancing that
//! never loses a peer.

pub mod balance;
pub mod check;
