//! `proxy.toml`: parsing, `${ENV}` expansion and validation.
//!
//! Parsing happens in two steps. Serde reads the file into `Raw*` structs that keep the
//! source span of every value that still needs checking (`toml::Spanned`); unknown keys are
//! rejected there. Then [`resolve`](Config::from_toml) expands environment placeholders and
//! checks meanings (addresses, paths, JSON pointers, route parameters), turning each raw
//! struct into the typed config the rest of the crate uses. Every error names the file, the
//! line and column, and the key path (`stream[1].source[0].every_ms`), and never a secret:
//! an unset variable is reported by name, never by value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::http::path::{PathPattern, PollTemplate};
use crate::http::query::QueryKeys;

mod auth;
mod cidr;
mod env;
mod raw;
mod resolve;
mod resolve_auth;
#[cfg(test)]
mod testing;

pub use auth::{
    AuthConfig, Endpoint, HttpValidatorConfig, IntrospectionConfig, JwtConfig, Secret, TokenSource,
    ValidatorConfig,
};
pub use cidr::Cidr;
pub use env::expand_env;
use raw::RawConfig;
use resolve::Resolver;

/// Where to go from a config file that is not there: the path comes from `--config`.
fn read_hint(error: &std::io::Error) -> &'static str {
    if error.kind() == std::io::ErrorKind::NotFound {
        " (give the file with --config PATH; the repository's proxy.toml is a commented example)"
    } else {
        ""
    }
}

/// A config that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config {path}: {source}{}", read_hint(source))]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why reading failed.
        source: std::io::Error,
    },
    /// The file was read but a key is wrong.
    #[error("{file}:{line}:{column}: `{key}`: {message}")]
    Invalid {
        /// The config file's name as given.
        file: String,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// The key path, for example `stream[0].source[1].mode`.
        key: String,
        /// What is wrong and what would be right.
        message: String,
    },
    /// More than one problem: each, one per line, in file order.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
}

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen and the per-connection limits.
    pub listen: ListenConfig,
    /// Certificate and key for the HTTPS listener, required when `listen.https` is set.
    pub tls: Option<TlsFiles>,
    /// The buffered origin everything is forwarded to and polled from.
    pub upstream: UpstreamConfig,
    /// Token validation, required when a stream route has `auth = true`.
    pub auth: Option<AuthConfig>,
    /// Event-stream behaviour shared by all stream routes.
    pub sse: SseConfig,
    /// The routes answered as event streams; everything else passes through.
    pub streams: Vec<StreamConfig>,
    /// Which browser origins may read stream routes' answers; `None`: no CORS headers.
    pub cors: Option<CorsConfig>,
    /// Redis shared by several instances; `None`: this instance polls and keeps history alone.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: one poller per stream key across instances, history in Redis.
#[derive(Clone)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`; may hold a password, so it is never logged.
    pub redis: String,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    pub prefix: String,
    /// How long a poller's lease lives without renewal: an instance that dies loses its
    /// stream keys to another one within it.
    pub lease: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis", &"(hidden)")
            .field("prefix", &self.prefix)
            .field("lease", &self.lease)
            .finish()
    }
}

/// `[listen]`.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// TLS listener (ALPN h2 and http/1.1), if any.
    pub https: Option<SocketAddr>,
    /// Plaintext listener (HTTP/1.1 and h2c), if any.
    pub http: Option<SocketAddr>,
    /// Admin listener (`/healthz`, `/readyz`, `/metrics`), if any.
    pub admin: Option<SocketAddr>,
    /// Connections held open at once over all listeners; accepting waits beyond it.
    pub max_connections: usize,
    /// Bound on the TLS handshake, so a silent client cannot hold a connection slot.
    pub tls_handshake_timeout: Duration,
    /// Bound on reading a request's headers (HTTP/1.1, against slowloris), and on a
    /// connection's idleness with nothing in flight (any protocol).
    pub header_read_timeout: Duration,
    /// Bound on a write the client does not read: past it the connection is closed.
    pub write_timeout: Duration,
    /// How long in-flight passthrough requests may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Threads that each accept and serve connections start to end on a single-threaded
    /// runtime of their own (nginx's worker model: no work stealing, no cross-thread wake-ups
    /// within a request); 0 serves them on the shared multi-threaded runtime. Default: one
    /// per core the process may run on.
    pub serving_threads: usize,
    /// HTTP/2 streams (requests of any kind) open at once on one connection, advertised in
    /// SETTINGS; beyond it a stream is refused (`REFUSED_STREAM`), so one connection cannot
    /// take the whole stream pool.
    pub max_streams_per_connection: u32,
    /// HTTP/2 control frames (WINDOW_UPDATE, PING, SETTINGS, RST_STREAM, PRIORITY) a connection
    /// may send per second; past it the connection is closed, so a flood cannot take a core.
    pub max_h2_control_frames_per_s: u32,
    /// Peers (load balancers, CDNs) whose `X-Forwarded-*`, `Forwarded` and `X-Real-IP` are
    /// believed and appended to; anyone else's are replaced, so a client cannot forge them.
    pub trusted_proxies: Vec<Cidr>,
    /// Pass the origin's `Server` header to clients; off, it is dropped (it names the
    /// origin's software and version).
    pub keep_server_header: bool,
}

/// `[tls]`: file paths, resolved against the config file's folder.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// `[upstream]`.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// Host and port of the origin.
    pub authority: http::uri::Authority,
    /// A path prefix such as an API Gateway stage (`/prod`), without trailing slash.
    pub base_path: String,
    /// Bound on establishing a TCP (and TLS) connection to the origin.
    pub connect_timeout: Duration,
    /// Bound on the origin's answer: response headers for passthrough, the whole body for polls.
    pub timeout: Duration,
    /// Extra PEM roots to trust for an HTTPS origin (a private CA); the web PKI is always trusted.
    pub ca: Option<PathBuf>,
    /// Largest polled body accepted; a bigger one is a poll error, never buffered whole.
    pub max_poll_body_bytes: usize,
}

/// `[sse]`.
#[derive(Debug, Clone)]
pub struct SseConfig {
    /// Interval of comment frames that keep idle links open through load balancers.
    pub heartbeat: Duration,
    /// Reconnect delay advised to `EventSource` in the `retry:` field.
    pub retry_ms: u64,
    /// Open streams at once over all routes; beyond it 503 with `Retry-After`.
    pub max_streams: usize,
    /// Open streams at once for one validated user; beyond it 429.
    pub max_streams_per_user: usize,
    /// How long a new stream waits for its first poll before starting anyway.
    pub first_poll_wait: Duration,
    /// How long a poller keeps running after its last client left, so a reconnect reuses it.
    pub linger: Duration,
    /// Events kept per stream key for `Last-Event-ID` resume and for slow clients.
    pub history_events: usize,
    /// Bytes of events kept per stream key; whichever bound is hit first trims the history.
    pub history_bytes: usize,
    /// Ceiling of the exponential backoff after poll errors.
    pub max_backoff: Duration,
    /// How long a stream key the origin refused (401/403/404/410) is answered from memory;
    /// zero: not remembered.
    pub refusal_ttl: Duration,
    /// Most refused keys remembered at once.
    pub refusal_capacity: u64,
    /// How long a stream key's state and history are kept after its poller stopped, so a
    /// reconnect with `Last-Event-ID` gets exactly the difference.
    pub resume_window: Duration,
    /// Bytes all kept states may hold together; beyond it the least recently kept go.
    pub resume_memory_bytes: u64,
    /// Open streams at once from one client address (IPv6: one /64); beyond it 429. Behind
    /// `[listen] trusted_proxies`, the client address they forward.
    pub max_streams_per_ip: usize,
    /// The names of the events the proxy itself sends, shared with every route.
    pub events: Arc<EventNames>,
}

/// The `event:` names of the proxy's own events (`[sse] *_event`), configurable so they fit
/// what existing dashboards listen for, and never `error`, which `EventSource` reserves for
/// its own `onerror`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventNames {
    /// A source is failing; the stream goes on (`upstream_error`).
    pub outage: String,
    /// The origin refused the stream's resource (401, 403, 404, 410); the stream ends
    /// (`stream_refused`).
    pub refused: String,
    /// The stream could not be opened now (capacity, validator or origin down): sent to an
    /// `EventSource` with `retry:` before closing, so it reconnects later (`unavailable`).
    pub unavailable: String,
    /// The client is skipped to the full state (`resync`).
    pub resync: String,
    /// Heartbeats as this named event with JSON data; `None`: comment frames.
    pub heartbeat: Option<String>,
}

impl Default for EventNames {
    fn default() -> Self {
        EventNames {
            outage: "upstream_error".to_owned(),
            refused: "stream_refused".to_owned(),
            unavailable: "unavailable".to_owned(),
            resync: "resync".to_owned(),
            heartbeat: None,
        }
    }
}

impl EventNames {
    /// Every name in use, for the check that no source takes one.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        [&self.outage, &self.refused, &self.unavailable, &self.resync]
            .into_iter()
            .map(String::as_str)
            .chain(self.heartbeat.as_deref())
    }
}

/// `[cors]`: cross-origin access for browsers, on stream routes only (passthrough answers
/// are the origin's, with its own CORS headers).
#[derive(Debug, Clone)]
pub struct CorsConfig {
    /// The origins whose pages may read the streams.
    pub allow_origins: AllowOrigins,
    /// Whether pages may send cookies (`withCredentials`): the allowed origin is echoed
    /// with `Access-Control-Allow-Credentials: true`. Never combined with `*`.
    pub allow_credentials: bool,
    /// Response headers a page's script may read (`Access-Control-Expose-Headers`).
    pub expose_headers: Vec<HeaderName>,
    /// Request headers a preflight may ask for (a `fetch`-based SSE client's
    /// `Authorization`, `Last-Event-ID`).
    pub allow_headers: Vec<HeaderName>,
    /// How long a browser may cache a preflight answer.
    pub max_age: Duration,
}

/// Which origins `[cors] allow_origins` admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowOrigins {
    /// `"*"`: any page, without credentials.
    Any,
    /// Exactly these serialised origins (`https://app.example.com`), lower-cased.
    List(Vec<String>),
}

/// One `[[stream]]` route.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Position in the file's `[[stream]]` list: part of a stream key, and the metrics label's
    /// order.
    pub index: usize,
    /// The route pattern, for example `/api/v2/configurations/{id}/stream`.
    pub path: PathPattern,
    /// Whether a validated token is required; its credentials are forwarded on every poll.
    pub auth: bool,
    /// What is polled to feed the stream.
    pub sources: Vec<SourceConfig>,
    /// Declared query parameters: checked, normalised, part of the key, usable in polls.
    pub query: QueryKeys,
    /// Most distinct keys (parameter values) with open streams on this route at once; a
    /// new key beyond it is refused, so clients cannot make the proxy poll without bound.
    pub max_keys: usize,
    /// The proxy's own event names (from `[sse]`), used by this route's channels.
    pub events: Arc<EventNames>,
}

/// One `[[stream.source]]`.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The origin path (and query) polled, with the route's parameters filled in.
    pub poll: PollTemplate,
    /// Pause between the end of one poll and the start of the next.
    pub every: Duration,
    /// The SSE `event:` name of the events this source produces.
    pub event: String,
    /// How the polled document becomes events.
    pub mode: Mode,
    /// Extra request headers for the poll (secrets come from `${ENV}`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Origin long-poll: ask the origin to hold each poll up to this long until its data
    /// changes (`Prefer: wait=N`, RFC 7240). `None`: plain polling.
    pub wait: Option<Duration>,
}

/// How a polled JSON document becomes events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The whole document, sent when it changes.
    Snapshot,
    /// An array found by a JSON pointer, diffed item by item on a key field.
    Items {
        /// JSON pointer (RFC 6901) to the array, for example `/tickers`.
        pointer: String,
        /// The field of each item that identifies it.
        key: String,
    },
}

impl Config {
    /// Reads and validates a config file; `${NAME}` placeholders come from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        Config::from_toml(&text, &path.display().to_string(), base_dir, &|name| {
            std::env::var(name).ok()
        })
    }

    /// Parses config text. `file` names it in errors, relative paths are taken from
    /// `base_dir`, and `env` answers `${NAME}` placeholders.
    pub fn from_toml(
        text: &str,
        file: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let resolver = Resolver {
            file,
            text,
            base_dir,
            env,
            problems: Default::default(),
        };
        let raw: RawConfig = {
            let deserializer = toml::de::Deserializer::parse(text)
                .map_err(|e| resolver.error(e.span().unwrap_or(0..0), "(syntax)", e.message()))?;
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                // `Spanned` shows up in serde's path as a private field; it is not a key.
                let key = e
                    .path()
                    .to_string()
                    .replace(".$__serde_spanned_private_value", "");
                let inner = e.into_inner();
                resolver.error(inner.span().unwrap_or(0..0), &key, inner.message())
            })?
        };
        resolver.config(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::resolve_auth::parse_token_source;
    use super::*;

    const MINIMAL: &str = r#"
[listen]
http = "127.0.0.1:0"

[upstream]
url = "http://127.0.0.1:9000/prod/"

[[stream]]
path = "/api/v2/stream"
  [[stream.source]]
  poll = "/api/v2/metrics?hours=24"
  event = "metrics"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "proxy.toml", Path::new("/etc/sse"), &|name| {
            (name == "KEY").then(|| "s3cret".to_owned())
        })
    }

    fn invalid(text: &str) -> (usize, String, String) {
        super::testing::invalid_parts(parse(text))
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = parse(MINIMAL).expect("valid");
        assert_eq!(config.upstream.base_path, "/prod");
        assert_eq!(config.sse.max_streams, 100);
        assert_eq!(config.sse.first_poll_wait, Duration::from_secs(1));
        assert_eq!(config.streams[0].sources[0].mode, Mode::Snapshot);
        assert_eq!(config.streams[0].sources[0].every, Duration::from_secs(5));
    }

    #[test]
    fn the_resume_window_must_cover_two_reconnect_delays() {
        let config = parse(MINIMAL).expect("valid");
        assert_eq!(config.sse.resume_window, Duration::from_secs(60));
        assert_eq!(config.sse.refusal_ttl, Duration::from_secs(5));
        let sse =
            |table: &str| MINIMAL.replace("[[stream]]", &format!("[sse]\n{table}\n[[stream]]"));
        let (line, key, message) = invalid(&sse("retry_ms = 4000\nresume_window_s = 7"));
        assert_eq!((line, key.as_str()), (10, "sse.resume_window_s"));
        assert!(message.contains("4000 ms"), "{message}");
        let (line, key, _) = invalid(&sse("retry_ms = 40000"));
        assert_eq!(
            (line, key.as_str()),
            (9, "sse.resume_window_s"),
            "points at retry_ms"
        );
        let (_, key, _) = invalid(&sse("resume_memory_bytes = 0"));
        assert_eq!(key, "sse.resume_memory_bytes");
        parse(&sse(
            "retry_ms = 4000\nresume_window_s = 8\nrefusal_ttl_s = 0",
        ))
        .expect("valid");
    }

    #[test]
    fn the_shipped_proxy_toml_is_valid() {
        let text = include_str!("../../proxy.toml");
        Config::from_toml(text, "proxy.toml", Path::new("."), &|_| {
            Some("x".to_owned())
        })
        .expect("proxy.toml parses");
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = MINIMAL.replace("event = \"metrics\"", "event = \"metrics\"\n  evry_ms = 5");
        let (line, key, message) = invalid(&text);
        assert_eq!(line, 13);
        assert!(key.contains("stream[0].source[0]"), "{key}");
        assert!(message.contains("evry_ms"), "{message}");
    }

    #[test]
    fn wrong_type_names_the_key_path() {
        let text = MINIMAL.replace(
            "event = \"metrics\"",
            "event = \"metrics\"\n  every_ms = \"fast\"",
        );
        let (line, key, _) = invalid(&text);
        assert_eq!(line, 13);
        assert_eq!(key, "stream[0].source[0].every_ms");
    }

    #[test]
    fn zero_interval_is_rejected_at_its_line() {
        let text = MINIMAL.replace("event = \"metrics\"", "event = \"metrics\"\n  every_ms = 0");
        let (line, key, message) = invalid(&text);
        assert_eq!((line, key.as_str()), (13, "stream[0].source[0].every_ms"));
        assert!(message.contains("greater than 0"));
    }

    #[test]
    fn client_limits_have_defaults_and_are_checked_at_their_line() {
        let config = parse(MINIMAL).expect("valid");
        assert_eq!(config.listen.max_streams_per_connection, 100);
        assert_eq!(config.listen.max_h2_control_frames_per_s, 5_000);
        assert_eq!(config.sse.max_streams_per_ip, 256);
        let text = MINIMAL.replace(
            "http = \"127.0.0.1:0\"",
            "http = \"127.0.0.1:0\"\nmax_streams_per_connection = 5000000000",
        );
        let (line, key, message) = invalid(&text);
        assert_eq!(
            (line, key.as_str()),
            (4, "listen.max_streams_per_connection")
        );
        assert!(message.contains("at most 4294967295"), "{message}");
        let text = MINIMAL.replace(
            "http = \"127.0.0.1:0\"",
            "http = \"127.0.0.1:0\"\nmax_h2_control_frames_per_s = 0",
        );
        let (_, key, message) = invalid(&text);
        assert_eq!(key, "listen.max_h2_control_frames_per_s");
        assert!(message.contains("greater than 0"));
        let text = format!("{MINIMAL}\n[sse]\nmax_streams_per_ip = 0\n");
        let (_, key, _) = invalid(&text);
        assert_eq!(key, "sse.max_streams_per_ip");
    }

    #[test]
    fn serving_threads_default_to_one_per_core_and_are_checked_at_their_line() {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let config = parse(MINIMAL).expect("valid");
        assert_eq!(config.listen.serving_threads, cores);
        let with = |line: &str| {
            MINIMAL.replace(
                "http = \"127.0.0.1:0\"",
                &format!("http = \"127.0.0.1:0\"\n{line}"),
            )
        };
        let config = parse(&with("serving_threads = 0")).expect("valid");
        assert_eq!(config.listen.serving_threads, 0, "0: the shared runtime");
        let (line, key, message) = invalid(&with("serving_threads = 257"));
        assert_eq!((line, key.as_str()), (4, "listen.serving_threads"));
        assert!(message.contains("at most 256"), "{message}");
    }

    #[test]
    fn cache_lifetimes_are_bounded() {
        for key in ["refusal_ttl_s", "resume_window_s"] {
            let text = format!("{MINIMAL}\n[sse]\n{key} = 99999999999\n");
            let (_, named, message) = invalid(&text);
            assert_eq!(named, format!("sse.{key}"));
            assert!(message.contains("at most"), "{message}");
        }
    }

    #[test]
    fn missing_env_var_is_named_and_secret_values_never_appear() {
        let text = MINIMAL.replace(
            "event = \"metrics\"",
            "event = \"metrics\"\n  headers = { authorization = \"Bearer ${MISSING}\" }",
        );
        let (_, key, message) = invalid(&text);
        assert_eq!(key, "stream[0].source[0].headers.authorization");
        assert!(message.contains("MISSING"), "{message}");

        let text = MINIMAL.replace(
            "event = \"metrics\"",
            "event = \"metrics\"\n  headers = { authorization = \"Bearer ${KEY}\" }",
        );
        let config = parse(&text).expect("valid");
        assert_eq!(config.streams[0].sources[0].headers[0].1, "Bearer s3cret");
    }

    #[test]
    fn url_errors_quote_the_value_as_written_not_the_secret() {
        let text = MINIMAL.replace("http://127.0.0.1:9000/prod/", "https://h/prod?key=${KEY}");
        let (_, key, message) = invalid(&text);
        assert_eq!(key, "upstream.url");
        assert!(
            message.contains("${KEY}") && !message.contains("s3cret"),
            "{message}"
        );
    }

    #[test]
    fn items_mode_needs_pointer_and_key() {
        let text = MINIMAL.replace(
            "event = \"metrics\"",
            "event = \"metrics\"\n  mode = \"items\"",
        );
        let (line, key, message) = invalid(&text);
        assert_eq!(line, 13);
        assert_eq!(key, "stream[0].source[0].items");
        assert!(message.contains("JSON pointer"));
    }

    #[test]
    fn poll_placeholders_must_be_route_parameters() {
        let text = MINIMAL.replace("/api/v2/metrics?hours=24", "/api/v2/{nope}/metrics");
        let (line, key, message) = invalid(&text);
        assert_eq!((line, key.as_str()), (11, "stream[0].source[0].poll"));
        assert!(message.contains("nope"), "{message}");
    }

    #[test]
    fn https_needs_tls_and_auth_routes_need_auth() {
        let text = MINIMAL.replace("http = ", "https = ");
        let (_, key, _) = invalid(&text);
        assert_eq!(key, "listen.https");
        let text = MINIMAL.replace(
            "path = \"/api/v2/stream\"",
            "path = \"/api/v2/stream\"\nauth = true",
        );
        let (_, key, _) = invalid(&text);
        assert_eq!(key, "stream[0].auth");
    }

    #[test]
    fn syntax_errors_point_at_the_line() {
        let (line, _, _) = invalid("[listen]\nhttp = \"127.0.0.1:0\n");
        assert_eq!(line, 2);
    }

    #[test]
    fn env_expansion_rules() {
        let env = |n: &str| (n == "A").then(|| "1".to_owned());
        assert_eq!(expand_env("x${A}y${A}", &env).as_deref(), Ok("x1y1"));
        assert_eq!(expand_env("$A {A} $", &env).as_deref(), Ok("$A {A} $"));
        assert!(expand_env("${A", &env).unwrap_err().contains("closing"));
        assert!(expand_env("${1A}", &env).unwrap_err().contains("valid"));
    }

    #[test]
    fn token_sources_parse() {
        assert_eq!(parse_token_source("bearer"), Ok(TokenSource::Bearer));
        assert_eq!(
            parse_token_source("query:user_token"),
            Ok(TokenSource::Query("user_token".into()))
        );
        assert_eq!(
            parse_token_source("x-user-id"),
            Ok(TokenSource::Header(HeaderName::from_static("x-user-id")))
        );
        assert!(parse_token_source("query:").is_err());
        assert!(parse_token_source("bad header").is_err());
    }

    #[test]
    fn trusted_proxies_are_cidrs_checked_one_by_one() {
        let config = parse(MINIMAL).expect("valid");
        assert!(config.listen.trusted_proxies.is_empty());
        assert!(!config.listen.keep_server_header);
        let text = MINIMAL.replace(
            "http = \"127.0.0.1:0\"",
            "http = \"127.0.0.1:0\"\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nkeep_server_header = true",
        );
        let config = parse(&text).expect("valid");
        let ranges: Vec<String> = config
            .listen
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ranges, ["10.0.0.0/8", "::1/128"]);
        assert!(config.listen.keep_server_header);
        let text = MINIMAL.replace(
            "http = \"127.0.0.1:0\"",
            "http = \"127.0.0.1:0\"\ntrusted_proxies = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n]",
        );
        let (line, key, message) = invalid(&text);
        assert_eq!((line, key.as_str()), (6, "listen.trusted_proxies[1]"));
        assert!(message.contains("/33"), "{message}");
    }
}
