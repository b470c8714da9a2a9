//! The `text/event-stream` encoder (WHATWG HTML, "Server-sent events").
//!
//! A frame is written once per event into `Bytes` and shared by every subscriber. The rules
//! that matter for correctness: every line of the data (split on CR LF, CR or LF) becomes its
//! own `data:` line so the parser reassembles it exactly; `id` and `event` values can hold no
//! line break (and `id` no NUL, which the parser would ignore), so those characters are dropped;
//! one space always follows the colon, so a value that starts with a space survives the
//! parser's removal of one.

use bytes::{BufMut, Bytes, BytesMut};

/// A comment frame that keeps idle connections open; parsers ignore it.
pub const HEARTBEAT: &[u8] = b":\n\n";

/// One event to encode.
#[derive(Debug, Clone, Copy, Default)]
pub struct Event<'a> {
    /// `id:`: becomes the client's `Last-Event-ID`; `None` leaves the client's id unchanged.
    pub id: Option<&'a str>,
    /// `event:`: the type listened for with `addEventListener`; `None` means `message`.
    pub event: Option<&'a str>,
    /// `data:`: any text; multi-line text is split into several `data:` lines.
    pub data: &'a str,
}

/// Appends one encoded event to `out`.
pub fn encode_into(out: &mut BytesMut, event: &Event<'_>) {
    out.reserve(event.data.len() + 32);
    if let Some(id) = event.id {
        field(out, b"id", id, |c| c == '\n' || c == '\r' || c == '\0');
    }
    if let Some(name) = event.event {
        field(out, b"event", name, |c| c == '\n' || c == '\r');
    }
    let mut rest = event.data;
    loop {
        match rest.find(['\r', '\n']) {
            Some(at) => {
                data_line(out, &rest[..at]);
                let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[at + skip..];
            }
            None => {
                data_line(out, rest);
                break;
            }
        }
    }
    out.put_u8(b'\n');
}

/// Encodes one event as its own frame.
pub fn encode(event: &Event<'_>) -> Bytes {
    let mut out = BytesMut::new();
    encode_into(&mut out, event);
    out.freeze()
}

/// Appends the `retry:` field that sets `EventSource`'s reconnect delay.
pub fn retry_into(out: &mut BytesMut, millis: u64) {
    out.put_slice(b"retry: ");
    out.put_slice(millis.to_string().as_bytes());
    out.put_u8(b'\n');
}

/// Appends a comment frame (ignored by parsers, visible to `curl`).
pub fn comment_into(out: &mut BytesMut, text: &str) {
    for line in text.split(['\r', '\n']) {
        out.put_slice(b": ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

fn field(out: &mut BytesMut, name: &[u8], value: &str, drop: impl Fn(char) -> bool) {
    out.put_slice(name);
    out.put_slice(b": ");
    if value.contains(&drop) {
        let clean: String = value.chars().filter(|&c| !drop(c)).collect();
        out.put_slice(clean.as_bytes());
    } else {
        out.put_slice(value.as_bytes());
    }
    out.put_u8(b'\n');
}

/// The data of an encoded event, its `data:` lines joined: the inverse of [`encode`] for one
/// event's frame. `None` when the frame has no data or is not UTF-8.
pub fn data_of(frame: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(frame).ok()?;
    let lines: Vec<&str> = text
        .split('\n')
        .filter_map(|line| line.strip_prefix("data: "))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

fn data_line(out: &mut BytesMut, line: &str) {
    out.put_slice(b"data: ");
    out.put_slice(line.as_bytes());
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_of_reads_back_what_encode_wrote() {
        for data in ["{\"a\":1}", "two\nlines", ""] {
            let frame = encode(&Event {
                id: Some("7"),
                event: Some("e"),
                data,
            });
            assert_eq!(data_of(&frame).as_deref(), Some(data));
        }
        assert_eq!(data_of(b": comment\n\n"), None);
    }

    /// A minimal WHATWG event-stream parser, written from the spec's algorithm, used to check
    /// that whatever is encoded decodes back to the same event.
    fn parse(stream: &str) -> Vec<(String, String, String)> {
        let mut events = Vec::new();
        let (mut data, mut kind, mut last_id) = (String::new(), String::new(), String::new());
        let mut lines = Vec::new();
        let mut rest = stream;
        while let Some(at) = rest.find(['\r', '\n']) {
            lines.push(&rest[..at]);
            let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
            rest = &rest[at + skip..];
        }
        for line in lines {
            if line.is_empty() {
                if !data.is_empty() {
                    data.pop();
                    events.push((last_id.clone(), kind.clone(), data.clone()));
                }
                data.clear();
                kind.clear();
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (name, value) = match line.split_once(':') {
                Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match name {
                "data" => {
                    data.push_str(value);
                    data.push('\n');
                }
                "event" => kind = value.to_owned(),
                "id" if !value.contains('\0') => last_id = value.to_owned(),
                _ => {}
            }
        }
        events
    }

    fn roundtrip(data: &str) -> String {
        let frame = encode(&Event {
            id: Some("1"),
            event: Some("e"),
            data,
        });
        let text = std::str::from_utf8(&frame).expect("utf-8");
        let events = parse(text);
        assert_eq!(events.len(), 1, "{text:?}");
        events[0].2.clone()
    }

    #[test]
    fn plain_event_layout() {
        let frame = encode(&Event {
            id: Some("abc"),
            event: Some("metrics"),
            data: "{\"a\":1}",
        });
        assert_eq!(&frame[..], b"id: abc\nevent: metrics\ndata: {\"a\":1}\n\n");
    }

    #[test]
    fn multi_line_and_odd_data_survives_a_parser() {
        for data in [
            "",
            "one",
            "a\nb",
            "a\r\nb\rc\n",
            "\n\n",
            " leading space",
            ": looks like a comment",
            "data: nested",
            "unicode ✓ \u{feff}",
        ] {
            let expected = data.replace("\r\n", "\n").replace('\r', "\n");
            assert_eq!(roundtrip(data), expected, "data {data:?}");
        }
    }

    #[test]
    fn ids_and_names_cannot_break_framing() {
        let frame = encode(&Event {
            id: Some("a\nb\0c"),
            event: Some("x\r\ny"),
            data: "d",
        });
        let events = parse(std::str::from_utf8(&frame).expect("utf-8"));
        assert_eq!(events, vec![("abc".into(), "xy".into(), "d".into())]);
    }

    #[test]
    fn retry_and_comments_are_ignored_as_events() {
        let mut out = BytesMut::new();
        retry_into(&mut out, 3000);
        comment_into(&mut out, "waiting\nfor origin");
        out.put_slice(HEARTBEAT);
        assert_eq!(&out[..], b"retry: 3000\n: waiting\n: for origin\n\n:\n\n");
        assert!(parse(std::str::from_utf8(&out).expect("utf-8")).is_empty());
    }
}
