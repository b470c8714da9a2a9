//! The two message heads of our HTTP/1.1 exchange: the request head we write, and the
//! answer's head we parse (with `httparse`, bounded in size and header count).

use std::io::{self, Write};
use std::mem::MaybeUninit;

use bytes::{Buf, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode, Version};

use crate::http::names::lists_option;
use crate::http::spare;
use crate::origin::{ClientBody, Stated};

/// The largest answer head accepted (status line and headers together).
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// The most header fields an answer head may have.
pub(super) const MAX_HEADERS: usize = 100;
/// Header fields whose places are noted on the stack; an answer with more notes them in a
/// `Vec`.
const INLINE_FIELDS: usize = 24;
/// Room in an answer's header map for the fields the proxy adds before passing it on (request
/// id, CORS), so adding them does not grow (reallocate) the map.
const ADDED_HEADERS: usize = 4;

/// Writes the request head into `out`, in one pass over the caller's headers (each lookup by
/// name hashes it; BENCHMARKS.md, issue 15.1), and says whether the caller's `Connection`
/// asked to close:
/// - the origin-form target;
/// - `Host`: when stated, its stated value, or `host` (the origin's own) when that is `None`;
///   when not stated, the caller's first line, else `host`;
/// - the caller's other headers as given, but for those `stated`, whose lines replace the
///   caller's, and the framing ones, which follow from the body;
/// - `Content-Length`: the body's length, 0 for a bodiless POST, PUT or PATCH (their servers
///   expect a length) or when the caller set one (it is rewritten to what is sent), none
///   otherwise.
pub(super) fn encode_request(
    request: &Request<ClientBody>,
    host: Option<&HeaderValue>,
    stated: &Stated<'_>,
    out: &mut Vec<u8>,
) -> bool {
    out.extend_from_slice(request.method().as_str().as_bytes());
    out.push(b' ');
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let headers = request.headers();
    let host = match stated.iter().find(|(name, _)| **name == HOST) {
        Some((_, value)) => value.or(host.map(HeaderValue::as_bytes)),
        None => headers.get(HOST).or(host).map(HeaderValue::as_bytes),
    };
    if let Some(host) = host {
        field(out, b"host", host);
    }
    let mut closing = false;
    let mut length_set = false;
    for (name, value) in headers {
        if name == HOST
            || name == TRANSFER_ENCODING
            || stated.iter().any(|(stated, _)| *stated == name)
        {
            continue;
        }
        if name == CONTENT_LENGTH {
            length_set = true;
            continue;
        }
        if name == CONNECTION {
            closing |= lists_option(value, "close");
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    for (name, value) in stated {
        if let Some(value) = value
            && **name != HOST
        {
            // Written as it is: a stated value is a valid field value (`StatedField`).
            debug_assert!(HeaderValue::from_bytes(value).is_ok(), "{name}: {value:?}");
            field(out, name.as_str().as_bytes(), value);
        }
    }
    let length = match request.body() {
        ClientBody::Full(Some(bytes)) => Some(bytes.len()),
        _ if length_set
            || matches!(
                *request.method(),
                Method::POST | Method::PUT | Method::PATCH
            ) =>
        {
            Some(0)
        }
        _ => None,
    };
    if let Some(length) = length {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "content-length: {length}\r\n");
    }
    out.extend_from_slice(b"\r\n");
    closing
}

/// Writes one `name: value` line.
fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Where one header field's name and value lie in the head.
#[derive(Clone, Copy, Default)]
struct Field {
    /// Start and end of the name.
    name: (usize, usize),
    /// Start and end of the value.
    value: (usize, usize),
}

/// Parses the answer's head at the start of `buf`. Informational answers (1xx) before it are
/// taken out of `buf` and skipped; the final head is taken out too, and its header values
/// are slices of it (no copy). `Ok(None)`: the head is not complete yet.
pub(super) fn parse_response(buf: &mut BytesMut) -> io::Result<Option<Response<()>>> {
    loop {
        if buf.is_empty() {
            return Ok(None);
        }
        // Left uninitialised: httparse fills only the fields it finds.
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let length = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
                return Err(invalid("the answer's head is larger than 64 KiB"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(invalid("the answer has more than 100 header fields"));
            }
            Err(error) => return Err(invalid(format!("the answer's head is malformed: {error}"))),
        };
        if length > MAX_HEAD {
            return Err(invalid("the answer's head is larger than 64 KiB"));
        }
        let (Some(code), Some(minor)) = (parsed.code, parsed.version) else {
            return Err(invalid("the answer's status line is incomplete"));
        };
        if code == 101 {
            return Err(invalid("the origin switched protocols unasked"));
        }
        if (100..200).contains(&code) {
            buf.advance(length);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(invalid)?;
        let version = if minor == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Offsets, so the head can be split off the buffer and its values shared from it.
        let base = buf.as_ptr() as usize;
        // On the stack for the usual few fields; zeroing room for all MAX_HEADERS (3.2 KB) on
        // every answer counted more instructions than the rest of the parse (BENCHMARKS.md,
        // issue 15.1).
        let count = parsed.headers.len();
        let mut inline = [Field::default(); INLINE_FIELDS];
        let mut spilled = Vec::new();
        let found = if count <= INLINE_FIELDS {
            &mut inline[..count]
        } else {
            spilled.resize(count, Field::default());
            &mut spilled[..]
        };
        for (slot, header) in found.iter_mut().zip(parsed.headers.iter()) {
            let name = header.name.as_ptr() as usize - base;
            let value = header.value.as_ptr() as usize - base;
            *slot = Field {
                name: (name, name + header.name.len()),
                value: (value, value + header.value.len()),
            };
        }
        let head = buf.split_to(length).freeze();
        let mut headers = spare::header_map(count + ADDED_HEADERS);
        for field in found.iter() {
            let name =
                HeaderName::from_bytes(&head[field.name.0..field.name.1]).map_err(invalid)?;
            let value = HeaderValue::from_maybe_shared(head.slice(field.value.0..field.value.1))
                .map_err(invalid)?;
            headers.append(name, value);
        }
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        return Ok(Some(response));
    }
}

/// A malformed answer.
pub(super) fn invalid<E>(error: E) -> io::Error
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    io::Error::new(io::ErrorKind::InvalidData, error)
}
