//! The HTTP/1.1 fast path's request-head parser against hyper's (issue 12, item 7): any head
//! the fast path would serve, hyper parses to the same method, target, version and headers,
//! with no body; so anything hyper rejects, the fast path hands off (to hyper, which answers
//! it) or rejects. Generated heads are near-misses of a stream request (odd methods, targets,
//! versions, framing headers, bare LFs, stray bytes), so both sides of every rule are tried.
//!
//! More cases: `PROPTEST_CASES=100000 cargo test --release --test it fast_path_parser`; the
//! same parser is fuzzed by `fuzz/` (`cargo +nightly fuzz run h1_head`).

use bytes::Bytes;
use http::{Method, Version};
use http_body_util::Empty;
use proptest::prelude::*;
use sse_edge::edge::h1::{Parsed, parse_head};

use crate::common::hyper_reference::{Seen, reference_runtime, seen};

/// hyper's reading of `input`, on a runtime of its own.
fn hyper_parse(input: &[u8]) -> Option<Seen> {
    crate::common::hyper_reference::hyper_parse(&reference_runtime(), input)
}

/// Near-misses of `GET /api/v2/stream HTTP/1.1` with a few headers.
fn head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        4 => Just("GET".to_owned()),
        1 => Just("get".to_owned()),
        1 => Just("POST".to_owned()),
        1 => "[A-Z]{1,6}",
    ];
    let target = prop_oneof![
        4 => Just("/api/v2/stream".to_owned()),
        2 => "/[!-~]{0,24}",
        1 => "/[ -~\u{80}-\u{ff}]{0,12}",
        1 => Just("*".to_owned()),
        1 => Just("http://x.example/api/v2/stream".to_owned()),
        1 => "[!-~]{0,12}",
    ];
    let version = prop_oneof![
        6 => Just("HTTP/1.1"),
        1 => Just("HTTP/1.0"),
        1 => Just("HTTP/1.2"),
        1 => Just("http/1.1"),
        1 => Just("HTTP/2.0"),
    ];
    let name = prop_oneof![
        3 => Just("Host".to_owned()),
        1 => Just("Content-Length".to_owned()),
        1 => Just("Transfer-Encoding".to_owned()),
        1 => Just("Connection".to_owned()),
        1 => Just("Upgrade".to_owned()),
        1 => Just("Expect".to_owned()),
        1 => Just("Cookie".to_owned()),
        1 => Just("Host ".to_owned()),
        2 => "[!-~]{1,10}",
        1 => "[ -~]{0,6}",
    ];
    let value = prop_oneof![
        2 => Just("x.example".to_owned()),
        1 => Just("0".to_owned()),
        1 => Just("chunked".to_owned()),
        1 => Just("close".to_owned()),
        3 => "[\t -~]{0,16}",
        1 => "[\t -~\u{80}-\u{ff}]{0,8}",
    ];
    let eol = prop_oneof![6 => Just("\r\n"), 1 => Just("\n")];
    let headers = prop::collection::vec((name, value, eol.clone()), 0..6);
    let stray = prop::option::weighted(0.3, (any::<prop::sample::Index>(), any::<u8>()));
    (method, target, version, eol, headers, stray, "[ -~]{0,8}").prop_map(
        |(method, target, version, eol, headers, stray, after)| {
            let mut text: Vec<u8> = Vec::new();
            for ch in format!("{method} {target} {version}").chars() {
                // Characters from U+0080 to U+00FF stand for the byte of that value.
                text.push(u8::try_from(u32::from(ch)).unwrap_or(b'?'));
            }
            text.extend_from_slice(eol.as_bytes());
            for (name, value, eol) in headers {
                text.extend_from_slice(name.as_bytes());
                text.extend_from_slice(b": ");
                text.extend(
                    value
                        .chars()
                        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')),
                );
                text.extend_from_slice(eol.as_bytes());
            }
            text.extend_from_slice(eol.as_bytes());
            if let Some((at, byte)) = stray {
                let at = at.index(text.len() + 1);
                text.insert(at, byte);
            }
            text.extend_from_slice(after.as_bytes());
            text
        },
    )
}

/// Checks the property for one input: if the fast path would serve it, hyper parses the
/// head alone to the same request, and the same first request from the whole input (what
/// follows the head is the next request's).
fn same_as_hyper(input: &[u8]) -> Result<(), TestCaseError> {
    if let Parsed::Head(head) = parse_head(input) {
        prop_assert!(head.len <= input.len());
        let ours = seen(&head.request.map(|()| Empty::<Bytes>::new()));
        prop_assert_eq!(ours.version, Version::HTTP_11);
        prop_assert_eq!(&ours.method, &Method::GET);
        let alone = hyper_parse(&input[..head.len]);
        prop_assert_eq!(&hyper_parse(input), &alone);
        prop_assert_eq!(alone, Some(ours));
    }
    Ok(())
}

proptest! {
    #[test]
    fn what_the_fast_path_serves_hyper_parses_the_same(input in head()) {
        same_as_hyper(&input)?;
    }

    #[test]
    fn the_fast_path_parser_survives_any_bytes(input in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Parsed::Head(head) = parse_head(&input) {
            prop_assert!(head.len <= input.len());
        }
    }
}

#[test]
fn the_generator_reaches_both_verdicts() {
    // The property above is only as strong as the heads it sees: make sure some are served.
    let served = parse_head(b"GET /api/v2/stream HTTP/1.1\r\nHost: x.example\r\n\r\n");
    assert!(matches!(served, Parsed::Head(_)));
    assert!(matches!(
        parse_head(b"GET /api/v2/stream HTTP/1.1\r\nHost : x\r\n\r\n"),
        Parsed::NotOurs
    ));
    assert!(hyper_parse(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n").is_none());
}

#[test]
fn heads_the_fuzzer_found_parse_the_same() {
    // Hyper keeps one of two equal `Content-Length` lines; the fast path kept both, so the
    // request phases saw other headers than hyper's connections would give them.
    let cases: [&[u8]; 1] =
        [b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n"];
    for input in cases {
        same_as_hyper(input)
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(input)));
    }
}
