//! What operators see and steer; a leaf: it imports nothing of this crate.
//!
//! - [`metrics`]: counters, gauges and histograms, rendered as Prometheus text.
//! - [`shutdown`]: the signal that starts a graceful shutdown, passed to every task.

pub mod metrics;
pub mod shutdown;
