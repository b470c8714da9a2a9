//! Tools apart from the proxy (cargo feature `tools`, on by default): nothing in the core
//! imports them, and they use the core only as any client of the crate would.
//!
//! - [`demo`]: a built-in buffered sample origin with sse-edge in front of it.
//! - [`probe`]: `sse-edge probe URL`, which tells why an SSE endpoint times out.
//! - [`load`]: `sse-edge load URL`, the SSE load generator the benchmarks use.

pub mod demo;
pub mod load;
pub mod probe;
