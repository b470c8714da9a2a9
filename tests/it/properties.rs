//! Property tests (a fuzzing suite that runs in CI): any input to the encoder, the decoder,
//! the config parser, the router and the request parsers is handled without a panic, and
//! what is encoded decodes back to the same events in any chunking.
//!
//! Run more cases with `PROPTEST_CASES=100000 cargo test --test properties`.

use std::path::Path;

use proptest::prelude::*;
use sse_edge::config::Config;
use sse_edge::http::path::PathPattern;
use sse_edge::stream::sse::{self, Event};
use sse_edge::tools::probe::decode::{Decoder, Item};

/// What a WHATWG parser should see for this data: line breaks normalised to LF.
fn normalised(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

fn chunked_decode(stream: &[u8], cuts: &[usize]) -> Vec<Item> {
    let mut decoder = Decoder::default();
    let mut out = Vec::new();
    let mut start = 0;
    for &cut in cuts {
        let end = (start + cut).min(stream.len());
        decoder.feed(&stream[start..end], &mut out);
        start = end;
    }
    decoder.feed(&stream[start..], &mut out);
    out
}

proptest! {
    #[test]
    fn encoded_events_decode_back_in_any_chunking(
        events in prop::collection::vec((any::<String>(), "[a-zA-Z_.-]{1,12}", any::<String>()), 1..6),
        cuts in prop::collection::vec(0usize..40, 0..20),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (id, name, data) in &events {
            stream.extend_from_slice(&sse::encode(&Event { id: Some(id), event: Some(name), data }));
            let clean_id: String = id.chars().filter(|c| !matches!(c, '\r' | '\n' | '\0')).collect();
            expected.push(Item::Event { event: name.clone(), data: normalised(data), id: clean_id });
        }
        prop_assert_eq!(chunked_decode(&stream, &cuts), expected);
    }

    #[test]
    fn the_decoder_survives_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2000), cuts in prop::collection::vec(0usize..64, 0..30)) {
        let _ = chunked_decode(&bytes, &cuts);
    }

    #[test]
    fn the_config_parser_never_panics(text in any::<String>()) {
        let _ = Config::from_toml(&text, "fuzz.toml", Path::new("."), &|_| None);
    }

    #[test]
    fn a_mangled_config_is_an_error_pointing_inside_the_file(at in 0usize..2000, junk in "[\\[\\]{}=\"'#\\n a-z0-9.$]{1,8}") {
        let original = include_str!("../../proxy.toml");
        let mut at = at.min(original.len());
        while !original.is_char_boundary(at) {
            at -= 1;
        }
        let text = format!("{}{}{}", &original[..at], junk, &original[at..]);
        if let Err(sse_edge::config::ConfigError::Invalid { line, column, .. }) =
            Config::from_toml(&text, "proxy.toml", Path::new("."), &|_| Some("x".to_owned()))
        {
            prop_assert!(line >= 1 && line <= text.lines().count() + 1);
            prop_assert!(column >= 1);
        }
    }

    #[test]
    fn routed_parameters_are_always_plain_identifiers(path in "/api/v2/configurations/[^/?#]{0,300}/stream") {
        let pattern = PathPattern::parse("/api/v2/configurations/{id}/stream").expect("pattern");
        if let Some(Ok(params)) = pattern.matches(&path) {
            let id = &params[0];
            prop_assert!(!id.is_empty() && id.len() <= 128 && id != "." && id != "..");
            prop_assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b)));
        }
    }

    #[test]
    fn path_matching_survives_any_path(path in any::<String>()) {
        let pattern = PathPattern::parse("/a/{id}/b").expect("pattern");
        let _ = pattern.matches(&path);
    }
}
