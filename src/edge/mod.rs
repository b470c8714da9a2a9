//! The edge: accept, TLS, and serving each connection with the protocol it chose.
//!
//! - [`accept`]: listeners, connection permits, refusals over the cap, the shutdown drain.
//! - [`threads`]: `[listen] serving_threads`, each accepting and serving on a runtime of its
//!   own.
//! - [`tls`]: the HTTPS listener's certificate (reloadable), ALPN, and the TLS stream, which
//!   frees its buffers while a connection is idle.
//! - [`connection`]: one connection, on the HTTP/1.1 fast path ([`h1`]) or hyper.
//! - [`rewind`], [`idle`], [`write_timeout`]: IO wrappers: bytes read before hyper took over,
//!   idleness with nothing in flight, and writes a client does not read.
//! - `stall`, `control_frames`: HTTP/2 streams that make no progress, and control-frame
//!   floods.
//! - `coalesce`, `woken`: the frames of an HTTP/2 connection's streams gathered into one
//!   write, once the stream tasks woken with them have run.
//! - `write_through`: the write half shared by the read-side wrappers.
//! - [`admin`]: the admin listener.
//!
//! The edge reaches the request phases only through [`crate::request::App`].
//!
//! One accept loop serves both listeners. A connection permit (`[listen] max_connections`) is
//! taken before a connection is served, so the process never runs out of file descriptors.
//! Over the limit, newcomers are answered at once: a plaintext one gets a JSON 503 with
//! `Connection: close`, a TLS one (which would need a handshake first) is closed. Each connection is then bounded
//! while it has not yet sent a request: the TLS handshake by `tls_handshake_timeout`, HTTP/1.1
//! headers by `header_read_timeout`, and a write the client does not read by `write_timeout`
//! ([`write_timeout::WriteTimeout`]). HTTPS connections are served as HTTP/2 or HTTP/1.1 by
//! ALPN; plaintext ones auto-detect HTTP/1.1 or h2c. On shutdown the loop stops accepting and
//! every connection is asked to finish gracefully.

pub mod accept;
pub mod admin;
mod coalesce;
pub mod connection;
mod control_frames;
pub mod h1;
pub mod idle;
pub mod rewind;
mod stall;
pub mod threads;
pub mod tls;
mod woken;
mod write_through;
pub mod write_timeout;

pub use accept::{BindError, Drained, Listeners, bind, serve};
