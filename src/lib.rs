//! sse-edge: an edge reverse proxy that turns buffered HTTP backends into Server-Sent Events.
//!
//! The folders follow a request's path, each layer importing only the ones below it:
//!
//! - [`config`]: `proxy.toml`, parsed, `${ENV}`-expanded and validated.
//! - [`edge`]: accept (a permit per connection), TLS with ALPN, and serving each connection as
//!   HTTP/1.1 or HTTP/2. HTTP/1.1 connections start on the fast path ([`edge::h1`]), which
//!   answers bodiless `GET`s itself (event streams without per-connection buffers, passthrough
//!   without hyper's dispatch) and hands everything else to hyper.
//! - [`request`]: the request phases: route → authenticate → stream or passthrough → access
//!   log; the only layer that turns errors into HTTP answers ([`request::error`]: JSON, or
//!   a retryable event stream for an `EventSource`), and CORS on stream routes
//!   ([`request::cors`]).
//! - [`stream`]: the event streams: a [`hub`](stream::hub) of channels, one per stream key,
//!   each fed by one [`poller`](stream::poller) per source, turned into changes by
//!   [`delta`](stream::delta), encoded once by [`sse`](stream::sse) into the key's
//!   [`state`](stream::state), and fanned out to every client's [`body`](stream::body); a
//!   key's state outlives its poller for the [`resume`](stream::resume) window. With
//!   `[cluster]`, [`cluster`](stream::cluster) shares one poller per key across instances
//!   through Redis: a leased holder publishes, the others follow.
//! - [`origin`]: our own pool of connections to the buffered origin, and its TLS.
//! - [`ops`] (metrics, shutdown) and [`http`] (paths, JSON, query strings): leaves that import
//!   nothing of ours.
//! - [`tools`] (cargo feature `tools`, on by default): `sse-edge demo`, `probe` and `load`,
//!   apart from the proxy; nothing in the core imports them.
//!
//! [`Proxy::start`] (in [`proxy`]) is the composition root: it binds the listeners and runs
//! everything in the background; tests use it on port 0 and read the bound addresses back.

#![forbid(unsafe_code)]

pub mod config;
pub mod edge;
pub mod http;
pub mod ops;
pub mod origin;
pub mod proxy;
pub mod request;
pub mod stream;
#[cfg(feature = "tools")]
pub mod tools;

pub use proxy::{Proxy, StartError};
