//! HTTP helpers every layer may use; a leaf: it imports nothing of this crate.
//!
//! - [`path`]: `{name}` path patterns and poll templates, with checked parameters.
//! - [`json`]: JSON bodies: serialising, and reading an origin's `detail`.
//! - [`names`]: whether a message carries a header (without hashing its name), and whether a
//!   `Connection` line lists an option.
//! - [`query`]: reading one query parameter; the declared query parameters of a stream key.
//! - [`spare`]: header maps used again on the thread that is done with them.
//! - [`trace`]: request ids and trace context (`X-Request-Id`, `traceparent`, X-Ray).

pub mod json;
pub mod names;
pub mod path;
pub mod query;
pub mod spare;
pub mod trace;
