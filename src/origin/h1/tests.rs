//! Our HTTP/1.1 exchange against loopback origins that answer with scripted raw bytes, through
//! the pool (as every caller uses it), and the body decoder on its own.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::Authority;
use http::{HeaderName, Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use super::body::{Step, framing};
use super::head::parse_response;
use crate::origin::ClientBody;
use crate::origin::pool::{Pool, SendError, UpstreamBody};

/// One scripted answer: the bytes written back (none: no answer), then whether the origin
/// closes the connection.
type Scripted = (&'static [u8], bool);

/// A loopback origin answering requests, in order over all its connections, with the
/// scripted answers (closing once they run out).
struct Origin {
    /// Where it listens.
    authority: Authority,
    /// Every request it read (head and body), in order.
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Connections it accepted.
    connections: Arc<AtomicUsize>,
    /// Notified each time it closed a connection.
    closed: Arc<Notify>,
}

impl Origin {
    async fn start(answers: Vec<Scripted>) -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let authority = Authority::try_from(listener.local_addr().expect("addr").to_string())
            .expect("authority");
        let origin = Origin {
            authority,
            requests: Arc::default(),
            connections: Arc::default(),
            closed: Arc::default(),
        };
        let answers = Arc::new(Mutex::new(VecDeque::from(answers)));
        let (requests, connections, closed) = (
            origin.requests.clone(),
            origin.connections.clone(),
            origin.closed.clone(),
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(
                    stream,
                    answers.clone(),
                    requests.clone(),
                    closed.clone(),
                ));
            }
        });
        origin
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .expect("requests")
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }
}

/// Reads requests on one connection (head, then a body of its `content-length`) and writes
/// the next scripted answer for each.
async fn serve(
    mut stream: tokio::net::TcpStream,
    answers: Arc<Mutex<VecDeque<Scripted>>>,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
    closed: Arc<Notify>,
) {
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let end = loop {
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    closed.notify_one();
                    return;
                }
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        };
        let head = String::from_utf8_lossy(&seen[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while seen.len() < end + length {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        requests
            .lock()
            .expect("requests")
            .push(seen.drain(..end + length).collect());
        let next = answers.lock().expect("answers").pop_front();
        let Some((answer, close)) = next else {
            break;
        };
        if stream.write_all(answer).await.is_err() || close {
            break;
        }
    }
    drop(stream);
    closed.notify_one();
}

fn request(method: Method, origin: &Origin, body: ClientBody) -> Request<ClientBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = format!("http://{}/x?q=1", origin.authority)
        .parse()
        .expect("uri");
    request
}

async fn send(
    pool: &Pool,
    origin: &Origin,
    mut request: Request<ClientBody>,
) -> Result<Response<UpstreamBody>, SendError> {
    pool.send(
        false,
        origin.authority.clone(),
        &mut request,
        &[],
        Pool::test_due(),
    )
    .await
}

/// A GET and its whole answer.
async fn get(pool: &Pool, origin: &Origin) -> (StatusCode, Bytes) {
    let response = send(
        pool,
        origin,
        request(Method::GET, origin, ClientBody::Empty),
    )
    .await
    .expect("an answer");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a whole body")
        .to_bytes();
    (status, body)
}

/// The `io::Error` kind of a send that must have failed in the exchange.
fn failure(sent: Result<Response<UpstreamBody>, SendError>) -> io::ErrorKind {
    match sent {
        Err(SendError::Exchange(error)) => error.kind(),
        Err(other) => panic!("not an exchange error: {other}"),
        Ok(response) => panic!("an answer: {}", response.status()),
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

#[tokio::test]
async fn five_answers_of_each_framing_share_one_connection() {
    let origin = Origin::start(vec![
        (OK, false),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2;name=value\r\nok\r\n0\r\n\r\n",
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n1\r\no\r\n1 ; a=\"b\"\r\nk\r\n0\r\nx-sum: 1\r\nx-more: 2\r\n\r\n",
            false,
        ),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 2, 2\r\n\r\nok", false),
        (
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
    ])
    .await;
    let pool = Pool::for_tests(4);
    for _ in 0..5 {
        assert_eq!(
            get(&pool, &origin).await,
            (StatusCode::OK, Bytes::from("ok"))
        );
    }
    assert_eq!(origin.connections(), 1);
    assert_eq!(pool.idle_count(&origin.authority), 1);
    let host = &origin.authority;
    assert_eq!(
        origin.requests()[0],
        format!("GET /x?q=1 HTTP/1.1\r\nhost: {host}\r\n\r\n")
    );
}

#[tokio::test]
async fn requests_carry_their_headers_host_and_body_length() {
    let origin = Origin::start(vec![(OK, false), (OK, false), (OK, false)]).await;
    let pool = Pool::for_tests(4);
    let mut form = request(
        Method::POST,
        &origin,
        ClientBody::Full(Some(Bytes::from_static(b"a=b&c"))),
    );
    form.headers_mut().insert(
        "content-type",
        "application/x-www-form-urlencoded".parse().expect("value"),
    );
    // A stale length from the caller is replaced by the body's.
    form.headers_mut()
        .insert("content-length", "99".parse().expect("value"));
    let mut empty_put = request(Method::PUT, &origin, ClientBody::Empty);
    empty_put
        .headers_mut()
        .insert("host", "api.example".parse().expect("value"));
    for request in [
        form,
        empty_put,
        request(Method::DELETE, &origin, ClientBody::Full(None)),
    ] {
        let response = send(&pool, &origin, request).await.expect("an answer");
        response.into_body().collect().await.expect("body");
    }
    let host = &origin.authority;
    assert_eq!(
        origin.requests(),
        [
            format!(
                "POST /x?q=1 HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: 5\r\n\r\na=b&c"
            ),
            "PUT /x?q=1 HTTP/1.1\r\nhost: api.example\r\ncontent-length: 0\r\n\r\n".to_owned(),
            format!("DELETE /x?q=1 HTTP/1.1\r\nhost: {host}\r\n\r\n"),
        ]
    );
    assert_eq!(origin.connections(), 1);
}

/// What the proxy states replaces every line of its name the request carries, or drops the
/// name (`None`; for `Host`, the origin's own is sent); the request's other lines are kept.
#[tokio::test]
async fn stated_fields_replace_the_requests_own_lines() {
    static FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
    static REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
    static HOST: HeaderName = http::header::HOST;
    let origin = Origin::start(vec![(OK, false)]).await;
    let pool = Pool::for_tests(4);
    let mut get = request(Method::GET, &origin, ClientBody::Empty);
    for (name, value) in [
        ("x-forwarded-for", "10.0.0.1"),
        ("x-keep", "kept"),
        ("x-forwarded-for", "10.0.0.2"),
        ("x-real-ip", "10.0.0.1"),
        ("host", "client.example"),
    ] {
        get.headers_mut()
            .append(name, value.parse().expect("value"));
    }
    let stated = [
        (&FOR, Some(&b"203.0.113.9"[..])),
        (&REAL_IP, None),
        // The origin's own host, not the client's.
        (&HOST, None),
    ];
    let response = pool
        .send(
            false,
            origin.authority.clone(),
            &mut get,
            &stated,
            Pool::test_due(),
        )
        .await
        .expect("an answer");
    response.into_body().collect().await.expect("body");
    let host = &origin.authority;
    assert_eq!(
        origin.requests(),
        [format!(
            "GET /x?q=1 HTTP/1.1\r\nhost: {host}\r\nx-keep: kept\r\nx-forwarded-for: 203.0.113.9\r\n\r\n"
        )]
    );
}

#[tokio::test]
async fn a_close_delimited_body_is_read_to_the_end_and_not_reused() {
    let origin = Origin::start(vec![
        (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nall of it",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nraw",
            true,
        ),
    ])
    .await;
    let pool = Pool::for_tests(4);
    assert_eq!(get(&pool, &origin).await.1, "all of it");
    assert_eq!(pool.idle_count(&origin.authority), 0);
    assert_eq!(get(&pool, &origin).await.1, "raw");
    assert_eq!(pool.idle_count(&origin.authority), 0);
    assert_eq!(origin.connections(), 2);
}

#[tokio::test]
async fn head_204_and_304_have_no_body_whatever_the_origin_says() {
    let origin = Origin::start(vec![
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n", false),
        (
            b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\n",
            false,
        ),
        (
            b"HTTP/1.1 304 Not Modified\r\ntransfer-encoding: chunked\r\n\r\n",
            false,
        ),
        (OK, false),
    ])
    .await;
    let pool = Pool::for_tests(4);
    let response = send(
        &pool,
        &origin,
        request(Method::HEAD, &origin, ClientBody::Empty),
    )
    .await
    .expect("an answer");
    assert!(response.body().is_end_stream());
    assert_eq!(response.headers()["content-length"], "10");
    drop(response);
    for status in [StatusCode::NO_CONTENT, StatusCode::NOT_MODIFIED] {
        assert_eq!(get(&pool, &origin).await, (status, Bytes::new()));
    }
    // Had a body been expected, this answer would have been read as one.
    assert_eq!(get(&pool, &origin).await.1, "ok");
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn informational_answers_are_skipped() {
    let origin = Origin::start(vec![(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nx-final: 1\r\ncontent-length: 2\r\n\r\nok",
        false,
    )])
    .await;
    let pool = Pool::for_tests(4);
    let response = send(
        &pool,
        &origin,
        request(Method::GET, &origin, ClientBody::Empty),
    )
    .await
    .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), Version::HTTP_11);
    assert!(response.headers().get("link").is_none());
    assert_eq!(response.headers()["x-final"], "1");
    assert_eq!(response.body().size_hint().exact(), Some(2));
    let body = response.into_body().collect().await.expect("body");
    assert_eq!(body.to_bytes(), "ok");
}

#[tokio::test]
async fn malformed_heads_are_errors() {
    let mut large = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
    large.resize(70 * 1024, b'a');
    let large: &'static [u8] = Box::leak(large.into_boxed_slice());
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..101 {
        many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"content-length: 0\r\n\r\n");
    let many: &'static [u8] = Box::leak(many.into_boxed_slice());
    let answers: Vec<&'static [u8]> = vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
        large,
        many,
    ];
    let count = answers.len();
    let origin = Origin::start(answers.into_iter().map(|a| (a, true)).collect()).await;
    let pool = Pool::for_tests(4);
    for _ in 0..count {
        let sent = send(
            &pool,
            &origin,
            request(Method::GET, &origin, ClientBody::Empty),
        )
        .await;
        assert_eq!(failure(sent), io::ErrorKind::InvalidData);
    }
    assert_eq!(pool.idle_count(&origin.authority), 0);
}

#[tokio::test]
async fn transfer_encoding_wins_over_content_length_and_the_connection_is_not_reused() {
    let origin = Origin::start(vec![
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 100\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        (OK, false),
    ])
    .await;
    let pool = Pool::for_tests(4);
    assert_eq!(get(&pool, &origin).await.1, "ok");
    assert_eq!(pool.idle_count(&origin.authority), 0);
    assert_eq!(get(&pool, &origin).await.1, "ok");
    assert_eq!(origin.connections(), 2);
}

#[tokio::test]
async fn a_body_cut_short_is_an_error() {
    let origin = Origin::start(vec![
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", true),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
            true,
        ),
    ])
    .await;
    let pool = Pool::for_tests(4);
    for _ in 0..3 {
        let response = send(
            &pool,
            &origin,
            request(Method::GET, &origin, ClientBody::Empty),
        )
        .await
        .expect("an answer's head");
        response
            .into_body()
            .collect()
            .await
            .expect_err("a broken body");
    }
    assert_eq!(pool.idle_count(&origin.authority), 0);
}

#[tokio::test]
async fn answers_that_close_are_not_reused() {
    let origin = Origin::start(vec![
        (
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
        (
            b"HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        // Bytes nobody asked for after the body.
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokHTTP/1.1",
            false,
        ),
        (OK, false),
    ])
    .await;
    let pool = Pool::for_tests(4);
    for _ in 0..3 {
        assert_eq!(get(&pool, &origin).await.1, "ok");
        assert_eq!(pool.idle_count(&origin.authority), 0);
    }
    // The connection out of step is dropped when given back, or at the latest when next
    // taken out.
    assert_eq!(get(&pool, &origin).await.1, "ok");
    assert_eq!(get(&pool, &origin).await.1, "ok");
    assert_eq!(origin.connections(), 5);
}

/// A request whose `Connection` lists `close` (in any line, any case) leaves its connection
/// closed, not idle; one that does not keeps it.
#[tokio::test]
async fn a_request_that_asks_to_close_does_not_leave_its_connection_idle() {
    let origin = Origin::start(vec![(OK, false), (OK, false), (OK, false)]).await;
    let pool = Pool::for_tests(4);
    for (connection, idle) in [
        (&["x-other", "te, Close"][..], 0),
        (&["close"][..], 0),
        (&["keep-alive"][..], 1),
    ] {
        let mut get = request(Method::GET, &origin, ClientBody::Empty);
        for value in connection {
            get.headers_mut()
                .append("connection", value.parse().expect("value"));
        }
        let response = send(&pool, &origin, get).await.expect("an answer");
        response.into_body().collect().await.expect("body");
        assert_eq!(pool.idle_count(&origin.authority), idle, "{connection:?}");
    }
    assert_eq!(origin.connections(), 3);
}

#[tokio::test]
async fn a_body_dropped_unread_closes_its_connection() {
    let origin = Origin::start(vec![
        (b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false),
        (OK, false),
    ])
    .await;
    let pool = Pool::for_tests(4);
    let response = send(
        &pool,
        &origin,
        request(Method::GET, &origin, ClientBody::Empty),
    )
    .await
    .expect("an answer");
    drop(response);
    assert_eq!(pool.idle_count(&origin.authority), 0);
    assert_eq!(get(&pool, &origin).await.1, "ok");
    assert_eq!(origin.connections(), 2);
}

#[tokio::test]
async fn an_idle_connection_the_origin_closed_is_not_used() {
    // Answered as if kept, then closed while idle.
    let origin = Origin::start(vec![(OK, true), (OK, false)]).await;
    let pool = Pool::for_tests(4);
    assert_eq!(get(&pool, &origin).await.1, "ok");
    origin.closed.notified().await;
    // A POST is never sent twice: only the check at checkout can keep it off the closed
    // connection.
    let post = request(
        Method::POST,
        &origin,
        ClientBody::Full(Some(Bytes::from_static(b"once"))),
    );
    let response = send(&pool, &origin, post).await.expect("an answer");
    let body = response.into_body().collect().await.expect("body");
    assert_eq!(body.to_bytes(), "ok");
    assert_eq!(origin.connections(), 2);
    assert_eq!(origin.requests().len(), 2);
}

#[tokio::test]
async fn a_get_the_origin_drops_on_a_reused_connection_is_sent_once_more() {
    // The second request is read on the kept connection and dropped unanswered.
    let origin = Origin::start(vec![(OK, false), (b"", true), (OK, false)]).await;
    let pool = Pool::for_tests(4);
    assert_eq!(get(&pool, &origin).await.1, "ok");
    assert_eq!(get(&pool, &origin).await.1, "ok");
    assert_eq!(origin.connections(), 2);
    assert_eq!(origin.requests().len(), 3);
}

#[tokio::test]
async fn a_post_the_origin_drops_is_not_sent_again() {
    let origin = Origin::start(vec![(OK, false), (b"", true), (OK, false)]).await;
    let pool = Pool::for_tests(4);
    assert_eq!(get(&pool, &origin).await.1, "ok");
    let post = request(
        Method::POST,
        &origin,
        ClientBody::Full(Some(Bytes::from_static(b"once"))),
    );
    let sent = send(&pool, &origin, post).await;
    assert_eq!(failure(sent), io::ErrorKind::UnexpectedEof);
    assert_eq!(origin.requests().len(), 2);
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn a_fresh_connection_that_gets_no_answer_is_not_retried() {
    let origin = Origin::start(vec![(b"", true), (OK, false)]).await;
    let pool = Pool::for_tests(4);
    let sent = send(
        &pool,
        &origin,
        request(Method::GET, &origin, ClientBody::Empty),
    )
    .await;
    assert_eq!(failure(sent), io::ErrorKind::UnexpectedEof);
    assert_eq!(origin.connections(), 1);
}

#[tokio::test]
async fn an_answer_late_for_its_deadline_times_out_alone_and_closes_its_connection() {
    let origin = Origin::start(vec![(OK, false), (b"", false), (OK, false)]).await;
    let pool = Pool::for_tests(4);
    // The first exchange arms the connection's timer for its own deadline, 30 s ahead.
    assert_eq!(
        get(&pool, &origin).await,
        (StatusCode::OK, Bytes::from("ok"))
    );
    // The second gets no answer, and a nearer deadline: it ends there, not at the first's.
    let due = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut late = request(Method::GET, &origin, ClientBody::Empty);
    let sent = tokio::time::timeout(
        Duration::from_secs(20),
        pool.send(false, origin.authority.clone(), &mut late, &[], due),
    )
    .await
    .expect("over at its own deadline");
    match sent {
        Err(SendError::TimedOut) => {}
        Err(other) => panic!("not a timeout: {other}"),
        Ok(response) => panic!("an answer: {}", response.status()),
    }
    // Not sent again on a new connection, and its connection closed, not kept.
    origin.closed.notified().await;
    assert_eq!(pool.idle_count(&origin.authority), 0);
    assert_eq!(origin.connections(), 1);
    assert_eq!(
        get(&pool, &origin).await,
        (StatusCode::OK, Bytes::from("ok"))
    );
    assert_eq!(origin.connections(), 2);
}

/// Decodes `answer` (head and body) fed in the given pieces; the body, or the first error.
fn decode_in_pieces(answer: &[u8], pieces: &[usize]) -> io::Result<(Vec<u8>, bool)> {
    let mut buf = BytesMut::new();
    let mut fed = 0;
    let mut cuts = pieces.iter().copied().chain([answer.len()]);
    let response = loop {
        if let Some(response) = parse_response(&mut buf)? {
            break response;
        }
        let cut = cuts.next().expect("a complete head");
        buf.extend_from_slice(&answer[fed..cut]);
        fed = cut;
    };
    let mut decoder = framing(&Method::GET, false, &response)?.decoder;
    let mut body = Vec::new();
    loop {
        match decoder.decode(&mut buf)? {
            Step::Data(data) => body.extend_from_slice(&data),
            Step::Done => return Ok((body, buf.is_empty())),
            Step::More => match cuts.next() {
                Some(cut) if cut > fed => {
                    buf.extend_from_slice(&answer[fed..cut]);
                    fed = cut;
                }
                Some(_) => {}
                None => {
                    decoder.eof()?;
                    return Ok((body, true));
                }
            },
        }
    }
}

#[test]
fn a_chunked_body_decodes_the_same_split_anywhere() {
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
        5;name=value;other\r\nhello\r\n1 \r\n \r\nA ; q=\"x;y\"\r\n0123456789\r\n\
        0\r\nx-trailer: one\r\nx-other: two\r\n\r\n";
    for cut in 0..=answer.len() {
        assert_eq!(
            decode_in_pieces(answer, &[cut]).expect("decodes"),
            (b"hello 0123456789".to_vec(), true),
            "split at {cut}"
        );
    }
    for first in 0..answer.len() {
        for second in first..=answer.len() {
            assert_eq!(
                decode_in_pieces(answer, &[first, second])
                    .expect("decodes")
                    .0,
                b"hello 0123456789",
                "split at {first} and {second}"
            );
        }
    }
    let bytewise: Vec<usize> = (1..answer.len()).collect();
    assert_eq!(
        decode_in_pieces(answer, &bytewise).expect("decodes").0,
        b"hello 0123456789"
    );
}

#[test]
fn chunked_bodies_out_of_bounds_are_errors() {
    let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    let long_size = format!("{head}1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(2000));
    let long_trailers = format!("{head}0\r\nx-t: {}\r\n\r\n", "t".repeat(70 * 1024));
    let cases = [
        long_size,
        long_trailers,
        format!("{head}zz\r\n"),
        format!("{head}11111111111111111\r\n"),
        format!("{head}2\nok\r\n0\r\n\r\n"),
        format!("{head}2 x\r\nok\r\n0\r\n\r\n"),
    ];
    for case in &cases {
        let error = decode_in_pieces(case.as_bytes(), &[]).expect_err(case);
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{case:.80}");
    }
}

#[test]
fn a_content_length_body_stops_at_its_length() {
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nabcHTTP";
    for cut in 0..=answer.len() {
        let (body, clean) = decode_in_pieces(answer, &[cut]).expect("decodes");
        assert_eq!(body, b"abc");
        // What follows the body is left in the buffer, so the connection is not reused.
        assert_eq!(clean, cut == answer.len() - 4, "split at {cut}");
    }
}

/// An HTTP/1.0 answer with `Transfer-Encoding` has faulty framing (RFC 9112 §6.1): it is
/// refused, as hyper's client does, and its connection is not reused.
#[tokio::test]
async fn an_http10_answer_with_transfer_encoding_is_not_reused() {
    let origin = Origin::start(vec![
        (
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        (OK, false),
    ])
    .await;
    let pool = Pool::for_tests(4);
    if let Ok(response) = send(
        &pool,
        &origin,
        request(Method::GET, &origin, ClientBody::Empty),
    )
    .await
    {
        let _ = response.into_body().collect().await;
    }
    assert_eq!(
        pool.idle_count(&origin.authority),
        0,
        "a connection whose answer had faulty framing is not reused"
    );
}

/// A bare CR in a chunk-size line is an error (hyper's decoder ends the line at the first CR):
/// two parsers of one answer must not disagree on where a chunk starts.
#[test]
fn a_bare_cr_in_a_chunk_size_line_is_an_error() {
    let head = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
    for case in [
        format!("{head}2\r;x\r\nok\r\n0\r\n\r\n"),
        format!("{head}2;a\rb\r\nok\r\n0\r\n\r\n"),
        format!("{head}2\r\r\nok\r\n0\r\n\r\n"),
    ] {
        let result = decode_in_pieces(case.as_bytes(), &[]);
        assert!(result.is_err(), "{case:?} decoded: {result:?}");
    }
}

/// Heads with fields up to the limit, on both sides of the number noted on the stack, keep
/// every field in order, with its value, and the body after them.
#[test]
fn every_field_of_a_head_is_kept_in_order() {
    for count in [0, 1, 23, 24, 25, 99] {
        let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..count {
            answer.extend_from_slice(format!("x-field-{i}: value {i}\r\n").as_bytes());
        }
        answer.extend_from_slice(b"content-length: 2\r\n\r\nok");
        let mut buf = BytesMut::from(&answer[..]);
        let response = parse_response(&mut buf).expect("parses").expect("complete");
        let fields: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().expect("text").to_owned()))
            .collect();
        let mut expected: Vec<(String, String)> = (0..count)
            .map(|i| (format!("x-field-{i}"), format!("value {i}")))
            .collect();
        expected.push(("content-length".into(), "2".into()));
        assert_eq!(fields, expected, "{count} fields");
        assert_eq!(&buf[..], b"ok");
    }
}
