//! What operators see and steer; a leaf: it imports nothing of this crate.
//!
//! - [`deadline`]: one timer per connection for its successive waits, moved lazily.
//! - [`metrics`]: counters, gauges and histograms, rendered as Prometheus text.
//! - [`histogram`]: latency histograms for the request path.
//! - [`process`]: the standard `process_*` metrics, from `/proc/self`.
//! - [`shutdown`]: the signal that starts a graceful shutdown, passed to every task.
//! - `wakes` (tests only): a waker that counts its wake-ups, for the layers' tests.

pub mod deadline;
pub mod histogram;
pub mod metrics;
pub mod process;
pub mod shutdown;
#[cfg(test)]
pub mod wakes;
