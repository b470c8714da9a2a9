//! The answer's body: how it is delimited (RFC 9112 §6.3) and its decoder, which takes the
//! body's bytes out of the connection's read buffer as shared slices (no copy).

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Response, StatusCode, Version};

use super::head::invalid;
use crate::http::names::{carries, lists_option};

/// The longest chunk-size line accepted (size and extensions).
const MAX_CHUNK_LINE: usize = 1024;
/// The most trailer bytes accepted after the last chunk; they are read and dropped.
const MAX_TRAILERS: usize = 64 * 1024;

/// How the body of an answer ends, and whether the connection may carry another request.
pub(super) struct Framing {
    /// The decoder for the body.
    pub(super) decoder: Decoder,
    /// The answer and the request allow the connection to be reused once the body ended.
    pub(super) keep_alive: bool,
}

/// Decides the framing of the answer to a `method` request (RFC 9112 §6.3). `closing`: the
/// request itself asked to close the connection.
pub(super) fn framing(
    method: &Method,
    closing: bool,
    response: &Response<()>,
) -> io::Result<Framing> {
    let headers = response.headers();
    let mut keep_alive = !closing
        && match response.version() {
            Version::HTTP_11 => !has_token(headers, "close"),
            _ => has_token(headers, "keep-alive"),
        };
    let status = response.status();
    let state = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        State::Done
    } else if carries(headers, &TRANSFER_ENCODING) {
        // HTTP/1.0 has no transfer codings: such a message's framing is faulty (RFC 9112
        // §6.1), and hyper's client refuses it too.
        if response.version() == Version::HTTP_10 {
            return Err(invalid("an HTTP/1.0 answer has a Transfer-Encoding"));
        }
        // Transfer-Encoding wins over Content-Length; a message with both may be an attempt
        // to smuggle one, so its connection is not trusted with another request.
        if headers.contains_key(CONTENT_LENGTH) {
            keep_alive = false;
        }
        if ends_in_chunked(headers) {
            State::Chunked(Chunk::Size)
        } else {
            State::Close
        }
    } else if let Some(length) = content_length(headers)? {
        if length == 0 {
            State::Done
        } else {
            State::Length(length)
        }
    } else {
        State::Close
    };
    if matches!(state, State::Close) {
        keep_alive = false;
    }
    Ok(Framing {
        decoder: Decoder { state },
        keep_alive,
    })
}

/// Whether a `Connection` field lists `token`.
fn has_token(headers: &HeaderMap, token: &str) -> bool {
    // Most answers have no `Connection` line: looked for before a lookup hashes the name.
    carries(headers, &CONNECTION)
        && headers
            .get_all(CONNECTION)
            .iter()
            .any(|value| lists_option(value, token))
}

/// Whether the last transfer coding is `chunked`.
fn ends_in_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.rsplit(',').next())
        .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"))
}

/// The answer's `Content-Length`: every value (in every field, comma-separated) must be the
/// same number.
fn content_length(headers: &HeaderMap) -> io::Result<Option<u64>> {
    let mut length = None;
    for value in headers.get_all(CONTENT_LENGTH) {
        for item in value.as_bytes().split(|&b| b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
                return Err(invalid("the answer's Content-Length is not a number"));
            }
            let parsed = item
                .iter()
                .fold(0u64, |n, &digit| n * 10 + u64::from(digit - b'0'));
            if length.is_some_and(|seen| seen != parsed) {
                return Err(invalid("the answer has conflicting Content-Length values"));
            }
            length = Some(parsed);
        }
    }
    Ok(length)
}

/// What [`Decoder::decode`] found in the buffer.
#[derive(Debug)]
pub(super) enum Step {
    /// Some of the body.
    Data(Bytes),
    /// More bytes must be read first.
    More,
    /// The body ended.
    Done,
}

/// Takes an answer's body out of the read buffer.
#[derive(Debug)]
pub(in crate::origin) struct Decoder {
    /// Where in the body it is.
    state: State,
}

/// Where a decoder is in the body.
#[derive(Debug)]
enum State {
    /// This many bytes are left.
    Length(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// Everything until the origin closes.
    Close,
    /// The body ended.
    Done,
    /// The body failed; nothing more comes.
    Failed,
}

/// Where a chunked decoder is in the chunk framing.
#[derive(Debug)]
enum Chunk {
    /// Next is a chunk-size line.
    Size,
    /// This many bytes of the chunk's data are left.
    Data(u64),
    /// Next is the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer lines until an empty one; the bytes seen so far.
    Trailers(usize),
}

impl Decoder {
    /// Whether the body has ended (read to its end, or empty from the start).
    pub(in crate::origin) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Bytes of body left, when the answer said so.
    pub(in crate::origin) fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(left) => Some(left),
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Takes the next piece of body out of `buf`.
    pub(super) fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Step> {
        let result = self.step(buf);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// The origin closed the connection: the end of a close-delimited body, an error for any
    /// other.
    pub(super) fn eof(&mut self) -> io::Result<()> {
        match self.state {
            State::Close | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => {
                self.state = State::Failed;
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the origin closed the connection before the body ended",
                ))
            }
        }
    }

    fn step(&mut self, buf: &mut BytesMut) -> io::Result<Step> {
        loop {
            match &mut self.state {
                State::Done => return Ok(Step::Done),
                State::Failed => return Err(invalid("the body already failed")),
                State::Close | State::Length(_) | State::Chunked(Chunk::Data(_))
                    if buf.is_empty() =>
                {
                    return Ok(Step::More);
                }
                State::Close => return Ok(Step::Data(buf.split().freeze())),
                State::Length(left) => {
                    let data = take(buf, left);
                    if *left == 0 {
                        self.state = State::Done;
                    }
                    return Ok(Step::Data(data));
                }
                State::Chunked(chunk) => match chunk {
                    Chunk::Data(left) => {
                        let data = take(buf, left);
                        if *left == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                        return Ok(Step::Data(data));
                    }
                    Chunk::Size => {
                        let Some(line) = line(buf, MAX_CHUNK_LINE)? else {
                            return Ok(Step::More);
                        };
                        let size = chunk_size(&line)?;
                        *chunk = if size == 0 {
                            Chunk::Trailers(0)
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            if buf.first().is_some_and(|&b| b != b'\r') {
                                return Err(invalid("a chunk is longer than its size"));
                            }
                            return Ok(Step::More);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(invalid("a chunk is longer than its size"));
                        }
                        buf.advance(2);
                        *chunk = Chunk::Size;
                    }
                    Chunk::Trailers(seen) => {
                        let Some(line) = line(buf, MAX_TRAILERS - *seen)? else {
                            return Ok(Step::More);
                        };
                        *seen += line.len() + 2;
                        if line.is_empty() {
                            self.state = State::Done;
                        }
                    }
                },
            }
        }
    }
}

/// Up to `left` bytes from the front of `buf`, shared, not copied.
fn take(buf: &mut BytesMut, left: &mut u64) -> Bytes {
    let n = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
    *left -= n as u64;
    buf.split_to(n).freeze()
}

/// The next CRLF-ended line (without its CRLF), taken out of `buf`; `None` when it is not
/// all there yet. A line longer than `max` is an error.
fn line(buf: &mut BytesMut, max: usize) -> io::Result<Option<BytesMut>> {
    let window = &buf[..buf.len().min(max)];
    let Some(end) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= max {
            return Err(invalid("a chunk-size or trailer line is too long"));
        }
        return Ok(None);
    };
    if end == 0 || buf[end - 1] != b'\r' {
        return Err(invalid("a chunk line does not end in CRLF"));
    }
    let mut line = buf.split_to(end + 1);
    line.truncate(end - 1);
    Ok(Some(line))
}

/// The size in a chunk-size line; extensions (`;name=value`) are ignored.
fn chunk_size(line: &[u8]) -> io::Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(invalid(
            "a chunk size is not a hex number of at most 16 digits",
        ));
    }
    // A CR ends the line for other parsers (hyper's): one inside it would make two readers of
    // this answer disagree on where the next chunk starts.
    if line.contains(&b'\r') {
        return Err(invalid("a chunk-size line holds a bare CR"));
    }
    let rest = &line[digits..];
    let blanks = rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count();
    let rest = &rest[blanks..];
    if !rest.is_empty() && rest[0] != b';' {
        return Err(invalid("a chunk-size line has junk after the size"));
    }
    Ok(line[..digits].iter().fold(0u64, |n, &b| {
        // A hex digit, checked above.
        let digit = (b as char).to_digit(16).unwrap_or(0);
        (n << 4) | u64::from(digit)
    }))
}
