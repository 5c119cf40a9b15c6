//! Per-peer health: outlier ejection and circuit breaking, active checks, and balancing that
//! never loses a peer.

mod error;
mod future;
mod layer;
mod policy;
mod service;
mod window;

pub mod balance;
pub mod check;

pub use error::{Ejected, HealthError};
pub use future::ResponseFuture;
pub use layer::HealthLayer;
pub use policy::{HealthPolicy, HealthPolicyBuilder, Mode, SuccessRate};
pub use service::Health;
