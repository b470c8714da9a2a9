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
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::http::path::{PathPattern, PollTemplate};

mod env;
mod raw;
mod resolve;

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

/// `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Origin path that validates a token (`Authorization: Bearer <token>`).
    pub validate: String,
    /// Where a token may come from, tried in order.
    pub sources: Vec<TokenSource>,
    /// How long a valid token is trusted without asking again (shortened by `expires_at`).
    pub cache_ttl: Duration,
    /// How long a rejected token is answered from memory.
    pub negative_ttl: Duration,
    /// Most tokens remembered at once; the cache evicts beyond it.
    pub cache_capacity: u64,
    /// Most validator calls per second (with an equal burst); beyond it new tokens get 503.
    pub max_validations_per_s: u64,
}

/// One place a token may be found in a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// A request header holding the token as is (for example `x-user-id`).
    Header(HeaderName),
    /// A query parameter (`query:user_token`), for `EventSource`, which cannot set headers.
    Query(String),
    /// A cookie (`cookie:session`).
    Cookie(String),
}

impl TokenSource {
    /// How the source is described to a client that sent no token.
    pub fn describe(&self) -> String {
        match self {
            TokenSource::Bearer => "`Authorization: Bearer <token>`".to_owned(),
            TokenSource::Header(name) => format!("the `{name}` header"),
            TokenSource::Query(name) => format!("the `{name}` query parameter"),
            TokenSource::Cookie(name) => format!("the `{name}` cookie"),
        }
    }
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
    use super::resolve::parse_token_source;
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
        match parse(text) {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an invalid config, got {other:?}"),
        }
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
}
