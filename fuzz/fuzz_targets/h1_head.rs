//! Fuzzes the HTTP/1.1 fast path's request-head parser (`sse_edge::edge::h1::parse_head`)
//! with arbitrary bytes: it never panics, and what it decides to serve keeps the fast path's
//! promises. (That hyper parses a served head to the same request is the differential
//! property test in `tests/it/fast_path_parser.rs`.)

#![no_main]

use http::{Method, Version, header};
use libfuzzer_sys::fuzz_target;
use sse_edge::edge::h1::{Parsed, parse_head};

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
    // The head is the same whatever follows it, and no shorter prefix is a whole head.
    match parse_head(&data[..head.len]) {
        Parsed::Head(again) => {
            assert_eq!(again.len, head.len);
            assert_eq!(again.request.uri(), request.uri());
            assert_eq!(again.request.headers(), headers);
        }
        other => panic!("the head alone parsed as {other:?}"),
    }
    assert!(!matches!(parse_head(&data[..head.len - 1]), Parsed::Head(_)));
});
