//! Detecting what the HTTP/1.1 fast path serves: reading a request head with `httparse`
//! ([`parse_head`]) and routing it once: a `GET` with no body is served here, whatever its
//! route, and anything else is handed to hyper with the bytes read.

use std::io;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::ahead::ReadAhead;
use crate::http::names::lists_option;
use crate::http::spare;
use crate::request::router::{Route, RouteError, Router};

/// Largest request head served here; a larger one goes to hyper (which allows up to 64 KiB
/// and answers 431 beyond).
const MAX_HEAD: usize = 8 * 1024;
/// The smallest read buffer for a request head: enough for most requests, and small enough
/// for the allocator's per-thread cache (glibc's holds up to 1,032 bytes; a 2 KiB buffer took
/// its slow path on every request, BENCHMARKS.md, issue 15.1). A connection whose heads are
/// larger reads the next one into room for the last ([`read_size`]).
const FIRST_READ: usize = 1024;
/// Most request headers parsed here; more goes to hyper.
const MAX_HEADERS: usize = 64;
/// Headers the proxy states on a forwarded request (`X-Request-Id`, `X-Forwarded-For`,
/// `Forwarded`, `X-Real-IP`, `X-Forwarded-Proto`, `X-Forwarded-Host`), which are set in its
/// map when one of hyper's origin connections sends it (a streamed body, an HTTP/2 origin;
/// `origin::Stated`).
const ADDED_HEADERS: usize = 6;

/// What reading a request head gave.
pub(super) enum Step {
    /// A request to answer here, with the router's decision (boxed: it is much larger than
    /// the other variants, and a connection's task, which holds an event stream for hours, is
    /// sized by its largest state: unboxed, it grew by 700 bytes).
    Serve(Box<Head>, Result<Route, RouteError>),
    /// Something for hyper.
    NotOurs,
    /// The client closed the connection between requests.
    Eof,
}

/// A request head the fast path can serve: a `GET` over HTTP/1.1 with no body, no upgrade and
/// no `Expect`, whose target is in origin form and whose headers are all valid.
#[derive(Debug)]
pub struct Head {
    /// Method (`GET`), target, version (HTTP/1.1) and headers in the order sent, as the
    /// request phases take them.
    pub request: Request<()>,
    /// Length of the head in the bytes parsed (already taken off the read buffer); what
    /// follows is the next request.
    pub len: usize,
    /// The client asked to close the connection after the answer (`Connection: close`).
    pub close: bool,
}

/// What the bytes read so far are, to the fast path.
#[derive(Debug)]
pub enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A request the fast path can serve.
    Head(Box<Head>),
    /// Anything else, including what hyper would reject: hyper answers it.
    NotOurs,
}

/// Reads the next request head into `ahead.buf` (after what is there already) and says what
/// it is; a head served notes its size in `ahead.last_head`, which sizes the next read.
pub(super) async fn read_head<I: AsyncRead + Unpin>(
    io: &mut I,
    ahead: &mut ReadAhead,
    router: &Router,
) -> io::Result<Step> {
    let buf = &mut ahead.buf;
    loop {
        if !buf.is_empty() {
            match take_head(buf) {
                Parsed::Partial if buf.len() >= MAX_HEAD => return Ok(Step::NotOurs),
                Parsed::Partial => {}
                Parsed::NotOurs => return Ok(Step::NotOurs),
                Parsed::Head(head) => {
                    ahead.last_head = head.len;
                    let routed = router.route(&head.request);
                    return Ok(Step::Serve(head, routed));
                }
            }
        }
        buf.reserve(read_size(ahead.last_head).min(MAX_HEAD - buf.len()));
        if io.read_buf(buf).await? == 0 {
            return Ok(Step::Eof);
        }
    }
}

/// Room for the next read: [`FIRST_READ`], or after a larger head the smallest power of two
/// that holds it, as a client's heads on one connection are alike (the same cookies and
/// token), so that one read takes the next whole.
fn read_size(last_head: usize) -> usize {
    last_head.next_power_of_two().max(FIRST_READ)
}

/// [`take_head`] on a copy of `buf`, for tests and fuzzing: what the fast path makes of
/// these bytes.
pub fn parse_head(buf: &[u8]) -> Parsed {
    take_head(&mut BytesMut::from(buf))
}

/// Takes the request head at the start of `buf` off it when the fast path serves it: a `GET`
/// in origin form over HTTP/1.1, with no body, no upgrade and no `Expect`, whose headers are
/// all valid. What it serves, hyper would parse to the same request (a property test and a
/// fuzz target hold it to that); anything else is [`Parsed::NotOurs`], with `buf` left
/// intact for hyper.
///
/// The target and the header values are slices of the bytes read, not copies (nginx keeps
/// pointers into its buffer too): a browser's request carries a dozen headers, and each copy
/// was an allocation. So the buffer lives as long as the request: the phases copy what they
/// keep (the access log, the stream key, `Last-Event-ID`). One bounded exception: an HTTP/2
/// origin connection's HPACK table holds up to 4 KiB of recent header values, each of which
/// now holds its request's buffer (at most `MAX_HEAD`), so ~100 buffers per connection at
/// worst.
///
/// The bytes are split off `buf`, not the buffer frozen whole: `buf` keeps the room after
/// them in the same allocation, so once the request is done with its slices the next read
/// reclaims the whole allocation in place (`reserve` on a buffer nobody else holds) instead
/// of allocating another, and the reference count that the slices share is made once per
/// buffer, not once per request (two allocations and two frees per keep-alive request,
/// BENCHMARKS.md, issue 15.1).
fn take_head(buf: &mut BytesMut) -> Parsed {
    let read = buf.split().freeze();
    let parsed = parse_shared(&read);
    match &parsed {
        Parsed::Head(head) if head.len == read.len() => {}
        // Pipelined: the next requests are copied out, as the head's slices share `read`
        // (rare; bounded by what the fast path keeps read ahead, 8 KiB).
        Parsed::Head(head) => *buf = BytesMut::from(&read[head.len..]),
        // No slice of `read` is alive: once the room after it is let go, it is the same
        // buffer again, capacity and all.
        _ => {
            *buf = BytesMut::new();
            *buf = read
                .try_into_mut()
                .unwrap_or_else(|read| BytesMut::from(&read[..]));
        }
    }
    parsed
}

/// Parses and judges the request head at the start of `read` ([`take_head`]).
fn parse_shared(read: &Bytes) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(read) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) => return Parsed::NotOurs,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::NotOurs,
    };
    if request.version != Some(1) || request.method != Some("GET") {
        return Parsed::NotOurs;
    }
    let Some(uri) = request
        .path
        .filter(|path| path.starts_with('/'))
        .and_then(|path| Uri::from_maybe_shared(read.slice_ref(path.as_bytes())).ok())
    else {
        return Parsed::NotOurs;
    };
    // Room for what the proxy states when the request goes through hyper's origin
    // connections, so setting it does not grow the map.
    let mut map = spare::header_map(request.headers.len() + ADDED_HEADERS);
    let mut close = false;
    for header in request.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_maybe_shared(read.slice_ref(header.value)),
        ) else {
            return Parsed::NotOurs;
        };
        match name {
            header::TRANSFER_ENCODING | header::UPGRADE | header::EXPECT => return Parsed::NotOurs,
            // Hyper keeps one of several equal lengths: rare enough to leave to hyper.
            header::CONTENT_LENGTH if value != "0" || map.contains_key(&name) => {
                return Parsed::NotOurs;
            }
            header::CONNECTION => close |= lists_option(&value, "close"),
            _ => {}
        }
        map.append(name, value);
    }
    let mut out = Request::new(());
    *out.method_mut() = Method::GET;
    *out.uri_mut() = uri;
    *out.version_mut() = Version::HTTP_11;
    *out.headers_mut() = map;
    Parsed::Head(Box::new(Head {
        request: out,
        len,
        close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router {
        Router::of_patterns(&["/api/v2/stream", "/api/v2/configurations/{id}/stream"])
            .expect("patterns")
    }

    /// What the fast path does with `text`: `Some(routed)` when it serves it.
    fn step(text: &str) -> Option<Result<Route, RouteError>> {
        let mut io = text.as_bytes();
        let mut ahead = ReadAhead::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        match runtime.block_on(read_head(&mut io, &mut ahead, &router())) {
            Ok(Step::Serve(_, routed)) => Some(routed),
            Ok(Step::NotOurs) => None,
            Ok(Step::Eof) => panic!("{text:?} ended before a verdict"),
            Err(error) => panic!("{error}"),
        }
    }

    #[test]
    fn the_next_head_is_read_into_the_same_allocation_once_the_last_is_done() {
        let mut buf = BytesMut::with_capacity(3000);
        let start = buf.as_ptr();
        // Part of a head is left as it was, in its allocation with all its room.
        buf.extend_from_slice(b"GET /a HTTP/1.1\r\nHo");
        assert!(matches!(take_head(&mut buf), Parsed::Partial));
        assert_eq!(
            (buf.as_ptr(), buf.capacity(), &buf[..]),
            (start, 3000, &b"GET /a HTTP/1.1\r\nHo"[..])
        );
        buf.extend_from_slice(b"st: x\r\n\r\n");
        let Parsed::Head(first) = take_head(&mut buf) else {
            panic!("served here");
        };
        assert!(buf.is_empty());
        // Reads go into the room after the head; once that is too small and the request is
        // done with its slices, the whole allocation is reclaimed.
        assert!(buf.capacity() < 2990);
        drop(first);
        buf.reserve(2990);
        assert_eq!((buf.as_ptr(), buf.capacity()), (start, 3000));
        // A request still holding its slices is not written over: the next read goes
        // elsewhere.
        buf.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
        let Parsed::Head(second) = take_head(&mut buf) else {
            panic!("served here");
        };
        buf.reserve(2990);
        buf.extend_from_slice(&[b'x'; 2990]);
        assert_ne!(buf.as_ptr(), start);
        assert_eq!(second.request.uri().path(), "/b");
        assert_eq!(second.request.headers()["host"], "x");
    }

    #[test]
    fn a_plain_get_is_parsed_with_its_headers_in_order() {
        let text = "GET /api/v2/configurations/abc/stream?user_token=t HTTP/1.1\r\nHost: x\r\n\
                    Cookie: a=1\r\nCookie: b=2\r\nConnection: keep-alive, Close\r\n\r\nGET /next";
        let Parsed::Head(head) = parse_head(text.as_bytes()) else {
            panic!("served here");
        };
        assert_eq!(
            head.request.uri().path(),
            "/api/v2/configurations/abc/stream"
        );
        assert_eq!(head.request.uri().query(), Some("user_token=t"));
        let cookies: Vec<_> = head.request.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(
            &text[head.len..],
            "GET /next",
            "a pipelined request is left unread"
        );
    }

    #[test]
    fn stream_routes_are_served_here_and_routed_once() {
        let routed = step("GET /api/v2/configurations/abc/stream HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(
            matches!(&routed, Some(Ok(Route::Stream { route, params })) if route.index == 1 && params == &["abc"]),
            "{routed:?}"
        );
        // A stream path with a bad parameter, or a request with no Host, is served here too:
        // the request phase answers its 400, the same answer hyper's connections get.
        assert!(matches!(
            step("GET /api/v2/configurations/%2e%2e/stream HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Err(RouteError::BadParam(_)))
        ));
        assert!(matches!(
            step("GET /api/v2/stream HTTP/1.1\r\n\r\n"),
            Some(Err(RouteError::BadHost(_)))
        ));
        assert!(
            step("GET /api/v2/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").is_some()
        );
        // Passthrough GETs too: the fast path writes their answers as well.
        assert!(matches!(
            step("GET /api/v2/stream/status HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(Ok(Route::Passthrough))
        ));
    }

    #[test]
    fn a_served_head_is_taken_off_the_buffer_with_its_values_left_in_place() {
        let text =
            "GET /api/v2/stream/status?x=1 HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\n\r\nGET /next";
        let mut buf = BytesMut::from(text);
        let read = buf.as_ptr_range();
        let Parsed::Head(head) = take_head(&mut buf) else {
            panic!("served here");
        };
        assert_eq!(
            &buf[..],
            b"GET /next",
            "the pipelined request stays to be read"
        );
        let cookie = head.request.headers()["cookie"].as_bytes();
        assert_eq!(cookie, b"a=1");
        assert!(
            read.contains(&cookie.as_ptr()),
            "a header value is a slice of the bytes read, not a copy"
        );
        let target = head
            .request
            .uri()
            .path_and_query()
            .expect("target")
            .as_str();
        assert!(read.contains(&target.as_ptr()), "so is the target");
    }

    #[test]
    fn a_head_for_hyper_leaves_the_buffer_as_it_was() {
        // Refused by the method, by `http::Uri` after the buffer was shared (`<`),
        // by a bad header name, or not complete yet: hyper (or the next read) gets every byte.
        for text in [
            "POST /api/v2/stream HTTP/1.1\r\nHost: x\r\n\r\nbody",
            "GET /a<b> HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nHost: x\r\n\r\n"
                .replace("Host", "H\u{7f}st")
                .as_str(),
            "GET /api/v2/stream HTTP/1.1\r\nHost: x\r\n",
        ] {
            let mut buf = BytesMut::from(text);
            let parsed = take_head(&mut buf);
            assert!(!matches!(parsed, Parsed::Head(_)), "{text:?}: {parsed:?}");
            assert_eq!(&buf[..], text.as_bytes(), "{text:?}");
        }
        // The `<` target is a whole head to httparse: only `http::Uri` refuses it.
        let mut fields = [httparse::EMPTY_HEADER; 4];
        let whole = httparse::Request::new(&mut fields).parse(b"GET /a<b> HTTP/1.1\r\n\r\n");
        assert!(matches!(whole, Ok(httparse::Status::Complete(_))));
    }

    #[test]
    fn connection_close_is_seen_in_any_case_and_position() {
        let close = |value: &str| {
            let text = format!("GET / HTTP/1.1\r\nHost: x\r\nConnection: {value}\r\n\r\n");
            match parse_head(text.as_bytes()) {
                Parsed::Head(head) => head.close,
                other => panic!("{other:?}"),
            }
        };
        assert!(close("close"));
        assert!(close("keep-alive, Close"));
        assert!(close(" CLOSE "));
        assert!(!close("keep-alive"));
        assert!(!close("closed"));
        assert!(!close("x-close"));
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for text in [
            "POST /api/v2/stream HTTP/1.1\r\nHost: x\r\n\r\n",
            "HEAD /api/v2/stream/status HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /api/v2/stream HTTP/1.0\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET /api/v2/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET http://x/api/v2/stream HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /api/v2/stream HTTP/1.1\r\nBad Header: x\r\n\r\n",
        ] {
            assert!(step(text).is_none(), "{text:?}");
        }
        assert!(matches!(
            parse_head(b"GET /api/v2/stream HTTP/1.1\r\nHost"),
            Parsed::Partial
        ));
        // A head that never completes is hyper's to refuse once it is too long for here.
        let endless = format!("GET /api/v2/stream HTTP/1.1\r\nx: {}", "a".repeat(MAX_HEAD));
        assert!(step(&endless).is_none());
    }

    /// A client whose bytes arrive in reads of the given sizes (the last size repeats).
    struct Trickle {
        /// Everything the client sends.
        data: Vec<u8>,
        /// How much of it has been read.
        sent: usize,
        /// The sizes of the next reads.
        reads: Vec<usize>,
        /// How many reads were made.
        calls: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            out: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            self.calls += 1;
            let size = match self.reads.len() {
                0 => usize::MAX,
                1 => self.reads[0],
                _ => self.reads.remove(0),
            };
            let n = size.min(out.remaining()).min(self.data.len() - self.sent);
            let start = self.sent;
            out.put_slice(&self.data[start..start + n]);
            self.sent += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// What [`read_head`] makes of `text` arriving in reads of these sizes: its verdict, the
    /// read buffer after it, and how many bytes it read.
    fn read_in(text: &str, reads: Vec<usize>) -> (io::Result<Step>, BytesMut, usize) {
        let mut io = Trickle {
            data: text.as_bytes().to_vec(),
            sent: 0,
            reads,
            calls: 0,
        };
        let mut ahead = ReadAhead::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let step = runtime.block_on(read_head(&mut io, &mut ahead, &router()));
        (step, ahead.buf, io.sent)
    }

    #[test]
    fn a_head_of_max_head_bytes_is_served_and_one_more_is_not_however_it_arrives() {
        for (extra, served) in [(0, true), (1, false)] {
            let start = "GET /api/v2/stream HTTP/1.1\r\nHost: x\r\nX-Pad: ";
            let pad = MAX_HEAD + extra - start.len() - "\r\n\r\n".len();
            let text = format!("{start}{}\r\n\r\nGET /next", "p".repeat(pad));
            for size in [1, 100, FIRST_READ, 5000, MAX_HEAD + 100] {
                let (step, buf, sent) = read_in(&text, vec![size]);
                let read = &text.as_bytes()[..sent];
                match step.expect("read") {
                    Step::Serve(head, _) => {
                        assert!(served, "{extra} over, reads of {size}");
                        assert_eq!(head.len, MAX_HEAD);
                        assert_eq!(&buf[..], &read[MAX_HEAD..]);
                    }
                    Step::NotOurs => {
                        assert!(!served, "{extra} over, reads of {size}");
                        assert_eq!(&buf[..], read);
                    }
                    Step::Eof => panic!("{extra} over, reads of {size}: no verdict"),
                }
            }
        }
    }

    /// A head larger than [`FIRST_READ`] takes two reads; the connection's next one, of the
    /// same size, is read whole.
    #[test]
    fn a_connection_reads_its_next_large_head_at_once() {
        let head = format!(
            "GET /api/v2/stream HTTP/1.1\r\nHost: x\r\nCookie: {}\r\n\r\n",
            "c".repeat(1500)
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let mut ahead = ReadAhead::default();
        let mut reads = Vec::new();
        for _ in 0..2 {
            let mut io = Trickle {
                data: head.as_bytes().to_vec(),
                sent: 0,
                reads: Vec::new(),
                calls: 0,
            };
            let step = runtime.block_on(read_head(&mut io, &mut ahead, &router()));
            assert!(matches!(step, Ok(Step::Serve(..))));
            assert!(ahead.buf.is_empty());
            reads.push(io.calls);
        }
        assert_eq!(reads, [2, 1]);
        assert_eq!(read_size(0), FIRST_READ);
        assert_eq!(read_size(FIRST_READ), FIRST_READ);
        assert_eq!(read_size(FIRST_READ + 1), 2 * FIRST_READ);
    }

    proptest::proptest! {
        /// Whatever the fast path decides, and however the bytes came in, the buffer holds
        /// exactly the bytes read after the head it serves, or every byte read for hyper (or
        /// for the next read), heads near [`MAX_HEAD`] included.
        #[test]
        fn the_bytes_read_stay_exact_however_they_arrive(
            method in proptest::sample::select(vec!["GET", "GET", "POST"]),
            fields in proptest::collection::vec(
                (proptest::sample::select(vec!["Host", "Cookie", "X-Pad", "Bad Name"]), 0usize..3000),
                0..6,
            ),
            pad in 0usize..64,
            ends in proptest::bool::ANY,
            next in proptest::sample::select(vec!["", "GET /next HTTP/1.1\r\n", "POST / HTTP/1.1\r\n\r\nx"]),
            reads in proptest::collection::vec(1usize..5000, 1..6),
        ) {
            let mut text = format!("{method} /api/v2/stream HTTP/1.1\r\n");
            for (name, len) in fields {
                text.push_str(&format!("{name}: {}\r\n", "v".repeat(len)));
            }
            text.push_str(&format!("X-Fill: {}\r\n", "f".repeat(pad)));
            if ends {
                text.push_str("\r\n");
            }
            text.push_str(next);
            let (step, buf, sent) = read_in(&text, reads);
            let read = &text.as_bytes()[..sent];
            match step.expect("read") {
                Step::Serve(head, _) => {
                    proptest::prop_assert!(head.len <= MAX_HEAD);
                    proptest::prop_assert_eq!(&buf[..], &read[head.len..]);
                }
                Step::NotOurs | Step::Eof => proptest::prop_assert_eq!(&buf[..], read),
            }
        }
    }
}
