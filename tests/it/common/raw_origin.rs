//! An origin written byte by byte, for what a hyper origin never does (framings it does not
//! choose, answers cut short, silences): it reads each request head of a connection in turn,
//! pipelined ones included, and the test's handler answers it.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

use super::origin::FakeOrigin;
use super::{Options, TestProxy, try_start_proxy};

/// A handler's answer: the connection back to read its next request head, or `None` when
/// the handler is done with it (it closed, or the proxy did).
pub type Answer = Pin<Box<dyn Future<Output = Option<TcpStream>> + Send>>;

/// Serves on 127.0.0.1:0: each request head read (as text, without its closing blank line)
/// goes with its connection to `handler`.
pub async fn start(
    handler: impl Fn(String, TcpStream) -> Answer + Send + Sync + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handler = std::sync::Arc::new(handler);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut buf).await {
                            Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                            _ => return,
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&seen[..end]).into_owned();
                    seen.drain(..end + 4);
                    match handler(head, stream).await {
                        Some(kept) => stream = kept,
                        None => return,
                    }
                }
            });
        }
    });
    addr
}

/// The path a request head names.
pub fn path(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("/")
}

/// Reads and drops what the proxy sends until it closes the connection.
pub async fn until_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// The proxy, with `options`, sending to the raw origin at `addr` what it would send to
/// `fake` (which then serves nothing).
pub async fn proxy_to(fake: &FakeOrigin, options: Options, addr: SocketAddr) -> TestProxy {
    let raw = format!("http://{addr}");
    try_start_proxy(fake, options, |text| text.replace(&fake.url, &raw))
        .await
        .expect("proxy starts")
}
