//! The demo's sample origin: a strictly buffered dashboard API, as a Lambda in `BUFFERED`
//! mode would serve it. Every answer is one complete JSON body with a `Content-Length`;
//! nothing streams. Data changes every `tick`, the first request after a quiet spell waits
//! `cold_start` (a Lambda cold start), and `GET /api/v2/stream` shows the original problem:
//! asked directly, it holds the request for `BUFFERED_STREAM_HOLD` and then sends every
//! event at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// How long the buffered `/api/v2/stream` holds a request before answering all at once.
pub const BUFFERED_STREAM_HOLD: Duration = Duration::from_secs(29);
/// After this long without requests, the next one pays the cold start again.
const IDLE_BEFORE_COLD: Duration = Duration::from_secs(300);
/// A token and configuration that exist from the start, so the printed commands just work.
pub const DEMO_TOKEN: &str = "demo-token";
/// The demo user's configuration id.
pub const DEMO_CONFIGURATION: &str = "demo";
const DEMO_USER: &str = "demo-user";
/// Reported by `/api/v2/stream/status`.
const MAX_CONNECTIONS: usize = 100;
const DEFAULT_TICKERS: [&str; 5] = ["AAPL", "MSFT", "NVDA", "TSLA", "AMZN"];

/// How the sample origin behaves.
#[derive(Debug, Clone)]
pub struct OriginOptions {
    /// The key `/api/v2/metrics` requires as `Authorization: Bearer <key>`.
    pub api_key: String,
    /// Delay of the first answer after a quiet spell.
    pub cold_start: Duration,
    /// How often the data changes.
    pub tick: Duration,
}

/// One user's dashboard configuration.
struct Configuration {
    owner: String,
    tickers: Vec<String>,
}

/// The origin's in-memory world.
struct World {
    /// Issued tokens → user ids.
    tokens: HashMap<String, String>,
    /// Configurations by id.
    configurations: HashMap<String, Configuration>,
    /// Poll keys seen recently, for `/api/v2/stream/status`.
    recent_polls: HashMap<String, Instant>,
    /// When the last request arrived, for cold starts.
    last_request: Option<Instant>,
}

struct Origin {
    options: OriginOptions,
    started: Instant,
    world: Mutex<World>,
}

/// Binds the sample origin and serves it in the background; returns the bound address.
pub async fn spawn(addr: SocketAddr, options: OriginOptions) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let mut world = World {
        tokens: HashMap::from([(DEMO_TOKEN.to_owned(), DEMO_USER.to_owned())]),
        configurations: HashMap::new(),
        recent_polls: HashMap::new(),
        last_request: None,
    };
    world.configurations.insert(
        DEMO_CONFIGURATION.to_owned(),
        Configuration {
            owner: DEMO_USER.to_owned(),
            tickers: DEFAULT_TICKERS.iter().map(|t| (*t).to_owned()).collect(),
        },
    );
    let origin = Arc::new(Origin {
        options,
        started: Instant::now(),
        world: Mutex::new(world),
    });
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let origin = origin.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let origin = origin.clone();
                    async move { Ok::<_, std::convert::Infallible>(origin.handle(request).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(bound)
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn detail(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    reply(status, &json!({ "detail": text }))
}

impl Origin {
    fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let cold = {
            let mut world = self.world();
            let cold = world
                .last_request
                .is_none_or(|at| at.elapsed() > IDLE_BEFORE_COLD);
            world.last_request = Some(Instant::now());
            cold
        };
        if cold {
            tokio::time::sleep(self.options.cold_start).await;
        }
        let path = request.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let user = self.user(&request);
        match (request.method().clone(), segments.as_slice()) {
            (Method::GET, ["api", "v2", "stream", "status"]) => self.status(),
            (Method::GET, ["api", "v2", "stream"]) => self.buffered_stream().await,
            (Method::GET, ["api", "v2", "metrics"]) => self.metrics(&request).await,
            (Method::POST, ["api", "v2", "auth", "anonymous"]) => self.anonymous(),
            (Method::GET, ["api", "v2", "auth", "validate"]) => match user {
                Some(user) => reply(
                    StatusCode::OK,
                    &json!({ "user_id": user, "expires_at": "2999-01-01T00:00:00Z" }),
                ),
                None => detail(StatusCode::UNAUTHORIZED, "invalid or expired token"),
            },
            (Method::POST, ["api", "v2", "configurations"]) => match user {
                Some(user) => self.create_configuration(request, user).await,
                None => detail(StatusCode::UNAUTHORIZED, "sign in first"),
            },
            (Method::GET, ["api", "v2", "configurations", id, rest @ ..]) => {
                let Some(user) = user else {
                    return detail(StatusCode::UNAUTHORIZED, "sign in first");
                };
                match rest {
                    ["sentiment"] => self.sentiment(id, &user),
                    ["refresh", "status"] => self.refresh_status(id, &user),
                    _ => detail(StatusCode::NOT_FOUND, "no such endpoint"),
                }
            }
            _ => detail(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }

    /// The user behind `Authorization: Bearer <token>`, if the token was issued here.
    fn user(&self, request: &Request<Incoming>) -> Option<String> {
        let token = request
            .headers()
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?;
        self.world().tokens.get(token).cloned()
    }

    /// The tick number now; data is a pure function of it.
    fn tick(&self) -> u64 {
        let tick = self.options.tick.as_millis().max(1);
        (self.started.elapsed().as_millis() / tick) as u64
    }

    fn seen(&self, key: String) {
        self.world().recent_polls.insert(key, Instant::now());
    }

    fn status(&self) -> Response<Full<Bytes>> {
        let mut world = self.world();
        world
            .recent_polls
            .retain(|_, at| at.elapsed() < Duration::from_secs(30));
        let connections = world.recent_polls.len().min(MAX_CONNECTIONS);
        reply(
            StatusCode::OK,
            &json!({
                "connections": connections,
                "max_connections": MAX_CONNECTIONS,
                "available": MAX_CONNECTIONS - connections,
            }),
        )
    }

    async fn buffered_stream(&self) -> Response<Full<Bytes>> {
        tokio::time::sleep(BUFFERED_STREAM_HOLD).await;
        let tick = self.tick();
        let mut body = String::new();
        for n in 0..3 {
            body.push_str(&format!(
                "event: metrics\ndata: {}\n\n",
                metrics_document(24, tick + n)
            ));
        }
        let mut response = Response::new(Full::new(Bytes::from(body)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        response
    }

    /// The metrics document, with an `ETag`. A poll whose `If-None-Match` names the current
    /// sample gets `304`, or, with `Prefer: wait=N` (RFC 7240), is held until the next sample
    /// (at most N seconds, at most [`MAX_WAIT`]): the origin long-poll mode.
    async fn metrics(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let expected = format!("Bearer {}", self.options.api_key);
        let authorized = request
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| v.as_bytes() == expected.as_bytes());
        if !authorized {
            return detail(StatusCode::UNAUTHORIZED, "a dashboard API key is required");
        }
        let hours = request
            .uri()
            .query()
            .and_then(|q| crate::http::query::query_param(q, "hours"))
            .and_then(|h| h.parse::<u64>().ok())
            .unwrap_or(24)
            .clamp(1, 720);
        self.seen(format!("metrics:{hours}"));
        let etag = |tick: u64| format!("\"m{hours}-{tick}\"");
        let asked = request.headers().get(header::IF_NONE_MATCH).cloned();
        let unchanged = |tick: u64| {
            asked
                .as_ref()
                .is_some_and(|v| v.as_bytes() == etag(tick).as_bytes())
        };
        let wait = request
            .headers()
            .get("prefer")
            .and_then(|v| v.to_str().ok())
            .and_then(prefer_wait)
            .map(|w| w.min(MAX_WAIT));
        let mut tick = self.tick();
        if let (true, Some(wait)) = (unchanged(tick), wait) {
            let next = self.started + self.options.tick.saturating_mul((tick + 1) as u32);
            tokio::time::sleep_until(next.min(Instant::now() + wait).into()).await;
            tick = self.tick();
        }
        let mut response = if unchanged(tick) {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            response
        } else {
            let mut document = metrics_document(hours, tick);
            // When this sample's data changed, for measuring origin-to-client latency.
            let changed = self.started + self.options.tick.saturating_mul(tick as u32);
            let changed_us = SystemTime::now()
                .checked_sub(changed.elapsed())
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_micros() as u64);
            document["ts_us"] = json!(changed_us);
            reply(StatusCode::OK, &document)
        };
        if let Ok(value) = header::HeaderValue::from_str(&etag(tick)) {
            response.headers_mut().insert(header::ETAG, value);
        }
        // The preference is applied whether the answer waited or was already there: either
        // way the poller may ask again at once.
        if let Some(wait) = wait
            && let Ok(value) = header::HeaderValue::from_str(&format!("wait={}", wait.as_secs()))
        {
            response.headers_mut().insert("preference-applied", value);
        }
        response
    }

    fn anonymous(&self) -> Response<Full<Bytes>> {
        let token = format!("anon-{:016x}", fastrand::u64(..));
        let user = format!("user-{:08x}", fastrand::u32(..));
        self.world().tokens.insert(token.clone(), user.clone());
        reply(
            StatusCode::OK,
            &json!({ "token": token, "user_id": user, "expires_at": "2999-01-01T00:00:00Z" }),
        )
    }

    async fn create_configuration(
        &self,
        request: Request<Incoming>,
        user: String,
    ) -> Response<Full<Bytes>> {
        let body = match Limited::new(request.into_body(), 64 * 1024).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return detail(StatusCode::PAYLOAD_TOO_LARGE, "body over 64 KiB"),
        };
        let tickers: Vec<String> = if body.is_empty() {
            DEFAULT_TICKERS.iter().map(|t| (*t).to_owned()).collect()
        } else {
            let parsed: Result<Value, _> = serde_json::from_slice(&body);
            let list = parsed
                .ok()
                .and_then(|v| v.get("tickers").and_then(Value::as_array).cloned());
            let Some(list) = list else {
                return detail(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "expected {\"tickers\": [\"AAPL\", ...]}",
                );
            };
            let tickers: Vec<String> = list
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| {
                    (1..=10).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric())
                })
                .map(str::to_ascii_uppercase)
                .take(20)
                .collect();
            if tickers.is_empty() {
                return detail(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "give at least one ticker symbol",
                );
            }
            tickers
        };
        let id = format!("cfg-{:08x}", fastrand::u32(..));
        self.world().configurations.insert(
            id.clone(),
            Configuration {
                owner: user,
                tickers: tickers.clone(),
            },
        );
        reply(
            StatusCode::CREATED,
            &json!({ "id": id, "tickers": tickers }),
        )
    }

    /// The tickers of a configuration the user owns; 404 otherwise (never revealing others').
    fn owned_tickers(&self, id: &str, user: &str) -> Option<Vec<String>> {
        let world = self.world();
        let configuration = world.configurations.get(id)?;
        (configuration.owner == user).then(|| configuration.tickers.clone())
    }

    fn sentiment(&self, id: &str, user: &str) -> Response<Full<Bytes>> {
        let Some(tickers) = self.owned_tickers(id, user) else {
            return detail(StatusCode::NOT_FOUND, "configuration not found");
        };
        self.seen(format!("sentiment:{user}:{id}"));
        let tick = self.tick();
        let items: Vec<Value> = tickers
            .iter()
            .enumerate()
            .map(|(i, symbol)| {
                // Each ticker changes on its own cadence: every 1, 2 or 3 ticks.
                let epoch = tick / (1 + i as u64 % 3);
                let h = mix(hash_str(symbol) ^ hash_str(id) ^ epoch);
                let score = ((h % 2001) as f64 - 1000.0) / 1000.0;
                let sentiment = if score > 0.2 {
                    "positive"
                } else if score < -0.2 {
                    "negative"
                } else {
                    "neutral"
                };
                json!({
                    "symbol": symbol,
                    "score": score,
                    "sentiment": sentiment,
                    "mentions": 100 + (h >> 20) % 900,
                })
            })
            .collect();
        reply(
            StatusCode::OK,
            &json!({ "configuration_id": id, "tickers": items }),
        )
    }

    fn refresh_status(&self, id: &str, user: &str) -> Response<Full<Bytes>> {
        if self.owned_tickers(id, user).is_none() {
            return detail(StatusCode::NOT_FOUND, "configuration not found");
        }
        self.seen(format!("refresh:{user}:{id}"));
        // A refresh runs for three ticks out of every seven.
        let tick = self.tick();
        let phase = tick % 7;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let body = if phase < 3 {
            json!({ "state": "refreshing", "progress": (phase + 1) * 33, "refresh": tick / 7 })
        } else {
            json!({ "state": "idle", "progress": 100, "refresh": tick / 7, "checked_at": now - now % 60 })
        };
        reply(StatusCode::OK, &body)
    }
}

fn metrics_document(hours: u64, tick: u64) -> Value {
    let h = mix(tick ^ hours.rotate_left(32));
    json!({
        "hours": hours,
        "requests": 10_000 + h % 5_000,
        "errors": (h >> 16) % 50,
        "p95_ms": 80 + (h >> 32) % 200,
        "sample": tick,
    })
}

/// Longest `Prefer: wait` honoured.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// The seconds of a `Prefer: wait=N` preference, among others (`respond-async, wait=10`).
fn prefer_wait(value: &str) -> Option<Duration> {
    value.split(',').find_map(|item| {
        let (name, seconds) = item.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("wait") {
            return None;
        }
        seconds.trim().parse().ok().map(Duration::from_secs)
    })
}

/// SplitMix64 finaliser: cheap, well-spread pseudo-random values from a counter.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn hash_str(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
