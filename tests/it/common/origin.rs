//! A fake buffered origin on loopback that the tests control: its data, its failures, and
//! when it answers. It counts every request by path, remembers the headers it last saw, and
//! lets a test wait for "the origin has seen N requests" instead of sleeping.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio_rustls::TlsAcceptor;

/// A configuration on the fake origin.
#[derive(Clone)]
struct Configuration {
    owner: String,
    tickers: Vec<Value>,
    refresh: Value,
}

/// A forced answer for a path.
#[derive(Clone)]
struct Forced {
    status: u16,
    body: String,
    retry_after: Option<u64>,
}

#[derive(Default)]
struct State {
    metrics: Value,
    status_connections: u64,
    configurations: HashMap<String, Configuration>,
    tokens: HashMap<String, String>,
    counts: HashMap<String, usize>,
    not_modified: HashMap<String, usize>,
    last_headers: HashMap<String, HeaderMap>,
    holds: Vec<(String, watch::Receiver<bool>)>,
    forced: HashMap<String, Forced>,
    /// The key set served at `/.well-known/jwks.json`.
    jwks: Option<Value>,
}

/// The fake origin; clone freely.
#[derive(Clone)]
pub struct FakeOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://...` or `https://localhost:...`.
    pub url: String,
    state: Arc<Mutex<State>>,
    seen: Arc<Notify>,
    changed: Arc<Notify>,
    /// Connections accepted so far (the proxy's pool reuses them).
    connections: Arc<AtomicUsize>,
}

/// Holds matching requests until released (a cold or hung origin).
pub struct Gate(watch::Sender<bool>);

impl Gate {
    /// Lets the held requests (and later ones) through.
    pub fn release(&self) {
        self.0.send_replace(true);
    }
}

impl FakeOrigin {
    /// A plaintext origin.
    pub async fn start() -> FakeOrigin {
        FakeOrigin::serve(None).await
    }

    /// A plaintext origin with two users who must never see each other's data: `tok-alice`
    /// owns `cfg1` (AAPL) and `cfg2` (MSFT), `tok-bob` owns `bobs` (NVDA).
    pub async fn start_alice_and_bob() -> FakeOrigin {
        let origin = FakeOrigin::start().await;
        origin.add_token("tok-alice", "alice");
        origin.add_token("tok-bob", "bob");
        origin.set_configuration("cfg1", "alice", json!([{"symbol": "AAPL"}]));
        origin.set_configuration("cfg2", "alice", json!([{"symbol": "MSFT"}]));
        origin.set_configuration("bobs", "bob", json!([{"symbol": "NVDA"}]));
        origin
    }

    /// An HTTPS origin with this certificate (for `localhost`).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> FakeOrigin {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("cert");
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("key");
        let mut config =
            rustls::ServerConfig::builder_with_provider(sse_edge::origin::tls::provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("server config");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        FakeOrigin::serve(Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(tls: Option<TlsAcceptor>) -> FakeOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        let url = match tls {
            Some(_) => format!("https://localhost:{}", addr.port()),
            None => format!("http://{addr}"),
        };
        let origin = FakeOrigin {
            addr,
            url,
            state: Arc::new(Mutex::new(State {
                metrics: json!({"requests": 1}),
                ..State::default()
            })),
            seen: Arc::new(Notify::new()),
            changed: Arc::new(Notify::new()),
            connections: Arc::new(AtomicUsize::new(0)),
        };
        let server = origin.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                server.connections.fetch_add(1, Ordering::SeqCst);
                let server = server.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, std::convert::Infallible>(server.handle(request).await) }
                    });
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        origin
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("origin state")
    }

    /// Registers a token for a user.
    pub fn add_token(&self, token: &str, user: &str) {
        self.state().tokens.insert(token.into(), user.into());
    }

    /// Serves this key set at `/.well-known/jwks.json` (404 until set).
    pub fn set_jwks(&self, jwks: Value) {
        self.state().jwks = Some(jwks);
    }

    /// Creates or replaces a configuration owned by `owner` (`"*"`: every user may read it,
    /// and each item says who asked, so a test can see whose data a stream carries).
    pub fn set_configuration(&self, id: &str, owner: &str, tickers: Value) {
        let tickers = tickers.as_array().cloned().expect("tickers array");
        let mut state = self.state();
        let refresh = state
            .configurations
            .get(id)
            .map_or(json!({"state": "idle"}), |c| c.refresh.clone());
        state.configurations.insert(
            id.into(),
            Configuration {
                owner: owner.into(),
                tickers,
                refresh,
            },
        );
    }

    /// Replaces a configuration's refresh status document.
    pub fn set_refresh(&self, id: &str, refresh: Value) {
        if let Some(c) = self.state().configurations.get_mut(id) {
            c.refresh = refresh;
        }
    }

    /// Replaces the metrics document (waking held long polls).
    pub fn set_metrics(&self, metrics: Value) {
        self.state().metrics = metrics;
        self.changed.notify_waiters();
    }

    /// Sets the `connections` the status endpoint reports.
    pub fn set_status_connections(&self, connections: u64) {
        self.state().status_connections = connections;
    }

    /// Answers requests for `path` with this status and body until cleared.
    pub fn force(&self, path: &str, status: u16, body: &str, retry_after: Option<u64>) {
        self.state().forced.insert(
            path.into(),
            Forced {
                status,
                body: body.into(),
                retry_after,
            },
        );
    }

    /// Stops forcing answers for `path`.
    pub fn clear_forced(&self, path: &str) {
        self.state().forced.remove(path);
    }

    /// Holds requests whose path starts with `prefix` until the gate is released.
    pub fn hold(&self, prefix: &str) -> Gate {
        let (sender, receiver) = watch::channel(false);
        self.state().holds.push((prefix.into(), receiver));
        Gate(sender)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests seen for `path` (without query).
    pub fn count(&self, path: &str) -> usize {
        self.state().counts.get(path).copied().unwrap_or(0)
    }

    /// 304 answers given for `path`.
    pub fn not_modified(&self, path: &str) -> usize {
        self.state().not_modified.get(path).copied().unwrap_or(0)
    }

    /// Headers of the last request for `path`.
    pub fn last_headers(&self, path: &str) -> HeaderMap {
        self.state()
            .last_headers
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `path` has been requested at least `n` times; panics after `within`.
    pub async fn wait_for_count(&self, path: &str, n: usize, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.seen.notified();
            if self.count(path) >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "origin saw {} requests for {path}, wanted {n}",
                    self.count(path)
                );
            }
        }
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_owned();
        let holds: Vec<watch::Receiver<bool>> = {
            let mut state = self.state();
            *state.counts.entry(path.clone()).or_default() += 1;
            state
                .last_headers
                .insert(path.clone(), request.headers().clone());
            state
                .holds
                .iter()
                .filter(|(prefix, _)| path.starts_with(prefix.as_str()))
                .map(|(_, gate)| gate.clone())
                .collect()
        };
        self.seen.notify_waiters();
        for mut gate in holds {
            let _ = gate.wait_for(|open| *open).await;
        }
        let forced = self.state().forced.get(&path).cloned();
        if let Some(forced) = forced {
            let mut response = Response::new(Full::new(Bytes::from(forced.body)));
            *response.status_mut() = StatusCode::from_u16(forced.status).expect("status");
            if let Some(seconds) = forced.retry_after {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, seconds.into());
            }
            return response;
        }
        // The proxy's statement of the validated user on polls (`[auth] identity_header`).
        let user = request
            .headers()
            .get("x-edge-user")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(str::to_owned)
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (request.method().clone(), segments.as_slice()) {
            (_, ["echo", ..]) => self.echo(request).await,
            (Method::GET, ["close"]) => {
                // Answers, then closes the connection (hyper closes after `Connection: close`).
                let mut response = json_reply(200, json!({"closing": true}));
                response
                    .headers_mut()
                    .insert(header::CONNECTION, "close".parse().expect("value"));
                response
            }
            (Method::GET, ["slow"]) => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                json_reply(200, json!({}))
            }
            (Method::GET, ["api", "v2", "stream", "status"]) => {
                let connections = self.state().status_connections;
                json_reply(
                    200,
                    json!({"connections": connections, "max_connections": 10, "available": 10 - connections}),
                )
            }
            (Method::GET, ["api", "v2", "metrics"]) => {
                // RFC 7240 long poll: an unchanged request with `Prefer: wait=N` is held until
                // the document changes or N seconds pass.
                let wait = request
                    .headers()
                    .get("prefer")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("wait="))
                    .and_then(|n| n.parse::<u64>().ok());
                let unchanged = |origin: &FakeOrigin| {
                    let etag = format!("\"{:x}\"", fxhash(&origin.state().metrics.to_string()));
                    request
                        .headers()
                        .get(header::IF_NONE_MATCH)
                        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
                };
                if let Some(seconds) = wait {
                    let changed = self.changed.notified();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    if unchanged(self) {
                        let _ = tokio::time::timeout(Duration::from_secs(seconds), changed).await;
                    }
                }
                let body = self.state().metrics.to_string();
                let etag = format!("\"{:x}\"", fxhash(&body));
                let mut response = if unchanged(self) {
                    *self.state().not_modified.entry(path).or_default() += 1;
                    let mut response = Response::new(Full::new(Bytes::new()));
                    *response.status_mut() = StatusCode::NOT_MODIFIED;
                    response
                } else {
                    json_reply(200, serde_json::from_str(&body).expect("json"))
                };
                response
                    .headers_mut()
                    .insert(header::ETAG, etag.parse().expect("etag"));
                if let Some(seconds) = wait {
                    response.headers_mut().insert(
                        "preference-applied",
                        format!("wait={seconds}").parse().expect("value"),
                    );
                }
                response
            }
            (Method::GET, ["api", "v2", "auth", "validate"]) => {
                let token = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned);
                let user = token.and_then(|t| self.state().tokens.get(&t).cloned());
                match user {
                    Some(user) => json_reply(200, json!({"user_id": user})),
                    None => json_reply(401, json!({"detail": "invalid token"})),
                }
            }
            (Method::GET, ["api", "v2", "auth", "session"]) => self.session(&request),
            (Method::POST, ["oauth2", "introspect"]) => self.introspect(request).await,
            (Method::GET, [".well-known", "jwks.json"]) => match self.state().jwks.clone() {
                Some(jwks) => json_reply(200, jwks),
                None => json_reply(404, json!({"detail": "no key set"})),
            },
            (Method::GET, ["api", "v2", "configurations", id, rest @ ..]) => {
                let configuration = self.state().configurations.get(*id).cloned();
                let owned =
                    configuration.filter(|c| c.owner == "*" || Some(&c.owner) == user.as_ref());
                match (owned, rest) {
                    (None, _) => json_reply(404, json!({"detail": "configuration not found"})),
                    (Some(c), ["sentiment"]) => {
                        let mut tickers = c.tickers.clone();
                        if c.owner == "*" {
                            for item in &mut tickers {
                                item["viewer"] = json!(user);
                            }
                        }
                        json_reply(200, json!({"configuration_id": id, "tickers": tickers}))
                    }
                    (Some(c), ["refresh", "status"]) => json_reply(200, c.refresh),
                    _ => json_reply(404, json!({"detail": "no such endpoint"})),
                }
            }
            _ => json_reply(404, json!({"detail": "no such endpoint"})),
        }
    }

    /// A FastAPI-style validator: the session token in `X-User-ID`, 200 for both outcomes.
    fn session(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let token = request
            .headers()
            .get("x-user-id")
            .and_then(|v| v.to_str().ok());
        match token.and_then(|t| self.state().tokens.get(t).cloned()) {
            Some(user) => json_reply(
                200,
                json!({"valid": true, "user_id": user, "auth_type": "session", "expires_at": "2999-01-01T00:00:00.000000"}),
            ),
            None => json_reply(
                200,
                json!({"valid": false, "error": "invalid_session", "message": "Session not found"}),
            ),
        }
    }

    /// RFC 7662 introspection for client `edge` with secret `s3cret`.
    async fn introspect(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        use base64::Engine;
        let expected = base64::engine::general_purpose::STANDARD.encode("edge:s3cret");
        let authorized = request
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == format!("Basic {expected}").as_bytes());
        let form_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v == "application/x-www-form-urlencoded");
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if !authorized || !form_type {
            return json_reply(401, json!({"error": "invalid_client"}));
        }
        let form = String::from_utf8_lossy(&body).into_owned();
        let token = form.split('&').find_map(|pair| pair.strip_prefix("token="));
        let token = token.map(|t| {
            percent_encoding::percent_decode_str(t)
                .decode_utf8_lossy()
                .into_owned()
        });
        match token.and_then(|t| self.state().tokens.get(&t).cloned()) {
            Some(user) => json_reply(
                200,
                json!({"active": true, "username": user, "exp": 4_102_444_800u64}),
            ),
            None => json_reply(200, json!({"active": false})),
        }
    }

    async fn echo(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        let mut response = json_reply(
            200,
            json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            }),
        );
        response
            .headers_mut()
            .insert("x-origin-hop", "kept".parse().expect("value"));
        response
            .headers_mut()
            .insert("keep-alive", "timeout=5".parse().expect("value"));
        response
            .headers_mut()
            .insert(header::SERVER, "fake-origin/1.0".parse().expect("value"));
        response
    }
}

fn json_reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).expect("status");
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("value"),
    );
    response
}

fn fxhash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
