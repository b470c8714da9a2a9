//! hyper's reading of an HTTP/1.1 request head, with its server built as the proxy builds its
//! own: the reference the fast path's parser is checked against, by
//! `tests/it/fast_path_parser.rs` and by the fuzz target `fuzz/fuzz_targets/h1_head.rs`
//! (which includes this file by path, being a crate of its own), so both check against the
//! same hyper.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri, Version};
use http_body::Body;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

/// What hyper made of the first request on a connection.
#[derive(Debug, PartialEq)]
pub struct Seen {
    /// The request's method.
    pub method: Method,
    /// The request target.
    pub uri: Uri,
    /// The HTTP version of the request line.
    pub version: Version,
    /// Name and value of each header, in the order hyper hands them out.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Whether hyper expects no body.
    pub no_body: bool,
}

/// The parts of `request` compared with hyper's reading.
pub fn seen<B: Body>(request: &Request<B>) -> Seen {
    Seen {
        method: request.method().clone(),
        uri: request.uri().clone(),
        version: request.version(),
        headers: request
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect(),
        no_body: request.body().is_end_stream(),
    }
}

/// A runtime [`hyper_parse`] can run on (hyper's server needs the timer).
pub fn reference_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Serves `input` (then the end of the connection) to a hyper HTTP/1.1 server built as the
/// proxy builds its own, and returns the first request hyper accepted, if any.
pub fn hyper_parse(runtime: &Runtime, input: &[u8]) -> Option<Seen> {
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(input.len() + 64 * 1024);
        client.write_all(input).await.expect("write");
        client.shutdown().await.expect("end of input");
        let first = Arc::new(Mutex::new(None));
        let record = first.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            record
                .lock()
                .expect("lock")
                .get_or_insert_with(|| seen(&request));
            async { Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new())) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .max_buf_size(64 * 1024)
            .half_close(true)
            .serve_connection(TokioIo::new(server), service);
        // Bounded: with the input ended, hyper finishes at once; the bound only turns a hang
        // into a failure.
        let _ = tokio::time::timeout(Duration::from_secs(10), connection)
            .await
            .expect("hyper finished with the input");
        first.lock().expect("lock").take()
    })
}
