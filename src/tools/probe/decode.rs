//! An incremental `text/event-stream` decoder (WHATWG HTML, "Interpreting an event stream").
//!
//! Fed bytes as they arrive, in chunks of any size; lines may end in CR LF, LF or CR, even
//! across chunk boundaries. A line longer than [`MAX_LINE`] is cut there, so a hostile server
//! cannot make the decoder grow without bound.

/// Longest line kept; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 1 << 20;
/// Most data kept for one event; further `data:` lines of the same event are dropped.
pub const MAX_EVENT: usize = 4 << 20;

/// Something the stream said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A dispatched event.
    Event {
        /// Its type (`message` when the stream gave none).
        event: String,
        /// Its data, lines joined by `\n`.
        data: String,
        /// The last event id after it.
        id: String,
    },
    /// A comment line (a heartbeat, usually).
    Comment,
    /// A `retry:` field with a valid number.
    Retry(u64),
}

/// Decoder state between chunks.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The current, unfinished line.
    line: Vec<u8>,
    /// The previous chunk ended in CR: a leading LF now belongs to that line end.
    after_cr: bool,
    /// The first line has ended, so a leading byte-order mark has been dropped.
    first_line_done: bool,
    data: String,
    event: String,
    last_id: String,
    has_data: bool,
}

impl Decoder {
    /// Decodes `bytes`, appending what they complete to `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Item>) {
        for &byte in bytes {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\n' => self.end_line(out),
                b'\r' => {
                    self.end_line(out);
                    self.after_cr = true;
                }
                _ if self.line.len() < MAX_LINE => self.line.push(byte),
                _ => {}
            }
        }
    }

    fn end_line(&mut self, out: &mut Vec<Item>) {
        if !self.first_line_done {
            // A byte-order mark may open the stream, even split over chunks.
            self.first_line_done = true;
            if self.line.starts_with(b"\xEF\xBB\xBF") {
                self.line.drain(..3);
            }
        }
        let line = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
        if line.is_empty() {
            if self.has_data {
                let event = if self.event.is_empty() {
                    "message".to_owned()
                } else {
                    std::mem::take(&mut self.event)
                };
                out.push(Item::Event {
                    event,
                    data: std::mem::take(&mut self.data),
                    id: self.last_id.clone(),
                });
            }
            self.data.clear();
            self.event.clear();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            out.push(Item::Comment);
            return;
        }
        let (name, value) = match line.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_str(), ""),
        };
        match name {
            "data" => {
                if self.data.len() + value.len() < MAX_EVENT {
                    if self.has_data {
                        self.data.push('\n');
                    }
                    self.data.push_str(value);
                }
                self.has_data = true;
            }
            "event" => self.event = value.to_owned(),
            "id" if !value.contains('\0') => self.last_id = value.to_owned(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    out.push(Item::Retry(ms));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::sse::{self, Event};

    fn decode_in_pieces(stream: &[u8], piece: usize) -> Vec<Item> {
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        for chunk in stream.chunks(piece.max(1)) {
            decoder.feed(chunk, &mut out);
        }
        out
    }

    #[test]
    fn decodes_what_the_encoder_writes_in_any_chunking() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"\xEF\xBB\xBFretry: 3000\n: hi\n\n");
        for (id, data) in [("1", "a\nb"), ("2", ""), ("3", " x\r\ny")] {
            stream.extend_from_slice(&sse::encode(&Event {
                id: Some(id),
                event: Some("e"),
                data,
            }));
        }
        let expected = vec![
            Item::Retry(3000),
            Item::Comment,
            Item::Event {
                event: "e".into(),
                data: "a\nb".into(),
                id: "1".into(),
            },
            Item::Event {
                event: "e".into(),
                data: "".into(),
                id: "2".into(),
            },
            Item::Event {
                event: "e".into(),
                data: " x\ny".into(),
                id: "3".into(),
            },
        ];
        for piece in [1, 2, 3, 7, 1000] {
            assert_eq!(
                decode_in_pieces(&stream, piece),
                expected,
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn cr_and_crlf_line_ends_across_chunks() {
        let out = decode_in_pieces(b"data: a\r\rdata: b\r\n\r\n", 1);
        assert_eq!(
            out,
            vec![
                Item::Event {
                    event: "message".into(),
                    data: "a".into(),
                    id: "".into()
                },
                Item::Event {
                    event: "message".into(),
                    data: "b".into(),
                    id: "".into()
                },
            ]
        );
    }

    #[test]
    fn events_without_data_are_not_dispatched_and_lines_are_bounded() {
        assert!(decode_in_pieces(b"event: x\nid: 5\n\n", 4).is_empty());
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        let long = vec![b'a'; MAX_LINE * 2];
        decoder.feed(b"data: ", &mut out);
        decoder.feed(&long, &mut out);
        assert!(decoder.line.len() <= MAX_LINE);
        decoder.feed(b"\n\n", &mut out);
        assert_eq!(out.len(), 1);
        let line = [b"data: ".as_slice(), &vec![b'b'; MAX_LINE - 10], b"\n"].concat();
        for _ in 0..16 {
            decoder.feed(&line, &mut out);
        }
        assert!(
            decoder.data.len() < MAX_EVENT,
            "one event's data is bounded too"
        );
    }
}
