//! Fuzzes the HTTP/1.1 fast path's request-head parser (`sse_edge::edge::h1::parse_head`)
//! with arbitrary bytes: it never panics, what it decides to serve keeps the fast path's
//! promises, and hyper (built as the proxy builds it) parses that head to the same request
//! with no body: the fuzzing twin of `tests/it/fast_path_parser.rs`.

#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use http::{Method, Request, Version, header};
use http_body_util::Empty;
use libfuzzer_sys::fuzz_target;
use sse_edge::edge::h1::{Parsed, parse_head};
use tokio::runtime::Runtime;

/// The reference parser the integration test checks against too.
#[path = "../../tests/it/common/hyper_reference.rs"]
mod hyper_reference;

use hyper_reference::{Seen, reference_runtime, seen};

/// One runtime for every input: building one per input would dominate the run.
fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(reference_runtime)
}

/// The first request hyper accepts from `input` (then the end of the connection).
fn hyper_parse(input: &[u8]) -> Option<Seen> {
    hyper_reference::hyper_parse(runtime(), input)
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
