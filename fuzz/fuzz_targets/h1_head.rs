//! Fuzzes the HTTP/1.1 fast path's request-head parser (`sse_edge::edge::h1::parse_head`)
//! with arbitrary bytes: it never panics, what it decides to serve keeps the fast path's
//! promises, and hyper (built as the proxy builds it) parses that head to the same request
//! with no body: the fuzzing twin of `tests/it/fast_path_parser.rs`.

#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version, header};
use http_body::Body;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use libfuzzer_sys::fuzz_target;
use sse_edge::edge::h1::{Parsed, parse_head};
use tokio::io::AsyncWriteExt;
use tokio::runtime::Runtime;

/// Method, target, version, headers in order, and whether there is no body.
type Seen = (Method, Uri, Version, Vec<(String, Vec<u8>)>, bool);

fn seen<B: Body>(request: &Request<B>) -> Seen {
    let headers = |map: &HeaderMap| {
        map.iter()
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect()
    };
    (
        request.method().clone(),
        request.uri().clone(),
        request.version(),
        headers(request.headers()),
        request.body().is_end_stream(),
    )
}

/// One runtime for every input: building one per input would dominate the run.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

/// The first request hyper accepts from `input` (then the end of the connection).
fn hyper_parse(input: &[u8]) -> Option<Seen> {
    runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(input.len() + 64 * 1024);
        client.write_all(input).await.expect("write");
        client.shutdown().await.expect("end of input");
        let first = Arc::new(Mutex::new(None));
        let record = first.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            record.lock().expect("lock").get_or_insert_with(|| seen(&request));
            async { Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new())) }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .max_buf_size(64 * 1024)
            .half_close(true)
            .serve_connection(TokioIo::new(server), service)
            .await;
        first.lock().expect("lock").take()
    })
}

fuzz_target!(|data: &[u8]| {
    let Parsed::Head(head) = parse_head(data) else {
        return;
    };
    let request = &head.request;
    // Only a bodiless GET in origin form over HTTP/1.1 is served.
    assert!(head.len > 0 && head.len <= data.len());
    assert_eq!(request.method(), Method::GET);
    assert_eq!(request.version(), Version::HTTP_11);
    assert!(request.uri().path().starts_with('/'));
    assert!(request.uri().authority().is_none());
    let headers = request.headers();
    for refused in [header::TRANSFER_ENCODING, header::UPGRADE, header::EXPECT] {
        assert!(!headers.contains_key(refused));
    }
    assert!(headers.get_all(header::CONTENT_LENGTH).iter().all(|v| v == "0"));
    // No shorter prefix is a whole head, and hyper parses the head to the same request,
    // alone or followed by whatever came after it.
    assert!(!matches!(parse_head(&data[..head.len - 1]), Parsed::Head(_)));
    let ours = seen(&Request::from_parts(request.clone().into_parts().0, Empty::<Bytes>::new()));
    let alone = hyper_parse(&data[..head.len]);
    assert_eq!(alone, Some(ours));
    assert_eq!(hyper_parse(data), alone);
});
