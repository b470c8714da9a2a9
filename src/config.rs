//! `proxy.toml`: parsing, `${ENV}` expansion and validation.
//!
//! Parsing happens in two steps. Serde reads the file into `Raw*` structs that keep the
//! source span of every value that still needs checking (`toml::Spanned`); unknown keys are
//! rejected there. Then [`resolve`](Config::from_toml) expands environment placeholders and
//! checks meanings (addresses, paths, JSON pointers, route parameters), turning each raw
//! struct into the typed config the rest of the crate uses. Every error names the file, the
//! line and column, and the key path (`stream[1].source[0].every_ms`), and never a secret:
//! an unset variable is reported by name, never by value.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use serde::Deserialize;
use toml::Spanned;

use crate::router::{PathPattern, PollTemplate};

/// A config that could not be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config {path}: {source}")]
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

// ---------------------------------------------------------------------------------------------
// Raw, as written in the file.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: RawListen,
    tls: Option<RawTls>,
    upstream: RawUpstream,
    auth: Option<RawAuth>,
    #[serde(default)]
    sse: RawSse,
    #[serde(default)]
    stream: Vec<Spanned<RawStream>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    https: Option<Spanned<String>>,
    http: Option<Spanned<String>>,
    admin: Option<Spanned<String>>,
    #[serde(default = "defaults::max_connections")]
    max_connections: Spanned<u64>,
    #[serde(default = "defaults::tls_handshake_timeout_ms")]
    tls_handshake_timeout_ms: Spanned<u64>,
    #[serde(default = "defaults::header_read_timeout_ms")]
    header_read_timeout_ms: Spanned<u64>,
    #[serde(default = "defaults::write_timeout_ms")]
    write_timeout_ms: Spanned<u64>,
    #[serde(default = "defaults::shutdown_grace_s")]
    shutdown_grace_s: Spanned<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Spanned<String>,
    #[serde(default = "defaults::connect_timeout_ms")]
    connect_timeout_ms: Spanned<u64>,
    #[serde(default = "defaults::timeout_ms")]
    timeout_ms: Spanned<u64>,
    ca: Option<Spanned<String>>,
    #[serde(default = "defaults::max_poll_body_bytes")]
    max_poll_body_bytes: Spanned<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    validate: Spanned<String>,
    #[serde(default = "defaults::sources")]
    sources: Vec<Spanned<String>>,
    #[serde(default = "defaults::cache_ttl_s")]
    cache_ttl_s: Spanned<u64>,
    #[serde(default = "defaults::negative_ttl_s")]
    negative_ttl_s: Spanned<u64>,
    #[serde(default = "defaults::cache_capacity")]
    cache_capacity: Spanned<u64>,
    #[serde(default = "defaults::max_validations_per_s")]
    max_validations_per_s: Spanned<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSse {
    #[serde(default = "defaults::heartbeat_s")]
    heartbeat_s: Spanned<u64>,
    #[serde(default = "defaults::retry_ms")]
    retry_ms: Spanned<u64>,
    #[serde(default = "defaults::max_streams")]
    max_streams: Spanned<u64>,
    #[serde(default = "defaults::max_streams_per_user")]
    max_streams_per_user: Spanned<u64>,
    #[serde(default = "defaults::first_poll_wait_ms")]
    first_poll_wait_ms: Spanned<u64>,
    #[serde(default = "defaults::linger_ms")]
    linger_ms: Spanned<u64>,
    #[serde(default = "defaults::history_events")]
    history_events: Spanned<u64>,
    #[serde(default = "defaults::history_bytes")]
    history_bytes: Spanned<u64>,
    #[serde(default = "defaults::max_backoff_ms")]
    max_backoff_ms: Spanned<u64>,
}

impl Default for RawSse {
    fn default() -> Self {
        RawSse {
            heartbeat_s: defaults::heartbeat_s(),
            retry_ms: defaults::retry_ms(),
            max_streams: defaults::max_streams(),
            max_streams_per_user: defaults::max_streams_per_user(),
            first_poll_wait_ms: defaults::first_poll_wait_ms(),
            linger_ms: defaults::linger_ms(),
            history_events: defaults::history_events(),
            history_bytes: defaults::history_bytes(),
            max_backoff_ms: defaults::max_backoff_ms(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    path: Spanned<String>,
    #[serde(default)]
    auth: bool,
    #[serde(default)]
    source: Vec<Spanned<RawSource>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    poll: Spanned<String>,
    #[serde(default = "defaults::every_ms")]
    every_ms: Spanned<u64>,
    event: Spanned<String>,
    #[serde(default = "defaults::mode")]
    mode: Spanned<String>,
    items: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    #[serde(default)]
    headers: BTreeMap<String, Spanned<String>>,
    wait_s: Option<Spanned<u64>>,
}

/// Default values, one function each because serde's `default = "path"` needs a function.
mod defaults {
    use toml::Spanned;

    fn at0<T>(value: T) -> Spanned<T> {
        Spanned::new(0..0, value)
    }
    pub fn max_connections() -> Spanned<u64> {
        at0(10_000)
    }
    pub fn tls_handshake_timeout_ms() -> Spanned<u64> {
        at0(5_000)
    }
    pub fn header_read_timeout_ms() -> Spanned<u64> {
        at0(10_000)
    }
    pub fn write_timeout_ms() -> Spanned<u64> {
        at0(30_000)
    }
    pub fn shutdown_grace_s() -> Spanned<u64> {
        at0(10)
    }
    pub fn connect_timeout_ms() -> Spanned<u64> {
        at0(3_000)
    }
    pub fn timeout_ms() -> Spanned<u64> {
        at0(30_000)
    }
    pub fn max_poll_body_bytes() -> Spanned<u64> {
        at0(4 * 1024 * 1024)
    }
    pub fn sources() -> Vec<Spanned<String>> {
        vec![at0("bearer".to_owned())]
    }
    pub fn cache_ttl_s() -> Spanned<u64> {
        at0(60)
    }
    pub fn negative_ttl_s() -> Spanned<u64> {
        at0(5)
    }
    pub fn cache_capacity() -> Spanned<u64> {
        at0(100_000)
    }
    pub fn heartbeat_s() -> Spanned<u64> {
        at0(30)
    }
    pub fn retry_ms() -> Spanned<u64> {
        at0(3_000)
    }
    pub fn max_streams() -> Spanned<u64> {
        at0(100)
    }
    pub fn max_streams_per_user() -> Spanned<u64> {
        at0(20)
    }
    pub fn max_validations_per_s() -> Spanned<u64> {
        at0(100)
    }
    pub fn first_poll_wait_ms() -> Spanned<u64> {
        at0(1_000)
    }
    pub fn linger_ms() -> Spanned<u64> {
        at0(500)
    }
    pub fn history_events() -> Spanned<u64> {
        at0(1_024)
    }
    pub fn history_bytes() -> Spanned<u64> {
        at0(4 * 1024 * 1024)
    }
    pub fn max_backoff_ms() -> Spanned<u64> {
        at0(60_000)
    }
    pub fn every_ms() -> Spanned<u64> {
        at0(5_000)
    }
    pub fn mode() -> Spanned<String> {
        at0("snapshot".to_owned())
    }
}

// ---------------------------------------------------------------------------------------------
// Resolution: raw → typed, with errors that point at the file.

/// Where errors are reported and how placeholders are filled.
struct Resolver<'a> {
    file: &'a str,
    text: &'a str,
    base_dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
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

impl Resolver<'_> {
    fn error(&self, span: Range<usize>, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// Expands `${NAME}` placeholders in a string value.
    fn expand(&self, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        expand_env(value.get_ref(), self.env).map_err(|m| self.error(value.span(), key, m))
    }

    fn positive(&self, value: &Spanned<u64>, key: &str) -> Result<u64, ConfigError> {
        match *value.get_ref() {
            0 => Err(self.error(value.span(), key, "must be greater than 0")),
            n => Ok(n),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listen = self.listen(&raw.listen)?;
        let tls = raw.tls.as_ref().map(|t| self.tls(t)).transpose()?;
        if listen.https.is_some() && tls.is_none() {
            let span = raw.listen.https.as_ref().map_or(0..0, |s| s.span());
            return Err(self.error(
                span,
                "listen.https",
                "an HTTPS listener needs a [tls] table with `cert` and `key`",
            ));
        }
        if listen.https.is_none() && listen.http.is_none() {
            return Err(self.error(0..0, "listen", "no listener: set `https`, `http` or both"));
        }
        let upstream = self.upstream(&raw.upstream)?;
        let auth = raw.auth.as_ref().map(|a| self.auth(a)).transpose()?;
        let sse = self.sse(&raw.sse)?;
        if sse.history_bytes < upstream.max_poll_body_bytes {
            return Err(self.error(
                raw.sse.history_bytes.span(),
                "sse.history_bytes",
                format!(
                    "must be at least upstream.max_poll_body_bytes ({}): the events of one large \
                     poll would not fit in the history, and every client would be resynced",
                    upstream.max_poll_body_bytes
                ),
            ));
        }
        let mut streams = Vec::with_capacity(raw.stream.len());
        let mut seen_paths = HashSet::new();
        for (index, stream) in raw.stream.iter().enumerate() {
            let resolved = self.stream(stream, index)?;
            if resolved.auth && auth.is_none() {
                return Err(self.error(
                    stream.span(),
                    &format!("stream[{index}].auth"),
                    "`auth = true` needs an [auth] table with `validate`",
                ));
            }
            if !seen_paths.insert(resolved.path.to_string()) {
                return Err(self.error(
                    stream.get_ref().path.span(),
                    &format!("stream[{index}].path"),
                    "the same path is declared by an earlier [[stream]]",
                ));
            }
            streams.push(resolved);
        }
        Ok(Config {
            listen,
            tls,
            upstream,
            auth,
            sse,
            streams,
        })
    }

    fn socket_addr(&self, value: &Spanned<String>, key: &str) -> Result<SocketAddr, ConfigError> {
        let text = self.expand(value, key)?;
        text.parse().map_err(|_| {
            self.error(
                value.span(),
                key,
                format!(
                    "`{}` is not an address like \"127.0.0.1:8080\" or \"[::]:8443\"",
                    value.get_ref()
                ),
            )
        })
    }

    fn listen(&self, raw: &RawListen) -> Result<ListenConfig, ConfigError> {
        Ok(ListenConfig {
            https: raw
                .https
                .as_ref()
                .map(|v| self.socket_addr(v, "listen.https"))
                .transpose()?,
            http: raw
                .http
                .as_ref()
                .map(|v| self.socket_addr(v, "listen.http"))
                .transpose()?,
            admin: raw
                .admin
                .as_ref()
                .map(|v| self.socket_addr(v, "listen.admin"))
                .transpose()?,
            max_connections: self.positive(&raw.max_connections, "listen.max_connections")?
                as usize,
            tls_handshake_timeout: Duration::from_millis(self.positive(
                &raw.tls_handshake_timeout_ms,
                "listen.tls_handshake_timeout_ms",
            )?),
            header_read_timeout: Duration::from_millis(
                self.positive(&raw.header_read_timeout_ms, "listen.header_read_timeout_ms")?,
            ),
            write_timeout: Duration::from_millis(
                self.positive(&raw.write_timeout_ms, "listen.write_timeout_ms")?,
            ),
            shutdown_grace: Duration::from_secs(*raw.shutdown_grace_s.get_ref()),
        })
    }

    fn path(&self, value: &Spanned<String>, key: &str) -> Result<PathBuf, ConfigError> {
        let text = self.expand(value, key)?;
        if text.is_empty() {
            return Err(self.error(value.span(), key, "must name a file"));
        }
        Ok(self.base_dir.join(text))
    }

    fn tls(&self, raw: &RawTls) -> Result<TlsFiles, ConfigError> {
        Ok(TlsFiles {
            cert: self.path(&raw.cert, "tls.cert")?,
            key: self.path(&raw.key, "tls.key")?,
        })
    }

    fn upstream(&self, raw: &RawUpstream) -> Result<UpstreamConfig, ConfigError> {
        let key = "upstream.url";
        let text = self.expand(&raw.url, key)?;
        // Messages quote the value as written: the expanded one may hold a secret.
        let written = raw.url.get_ref();
        let bad = |why: &str| {
            self.error(
                raw.url.span(),
                key,
                format!("`{written}` {why}; expected something like \"https://abc.lambda-url.us-east-1.on.aws\""),
            )
        };
        let uri: Uri = text.parse().map_err(|_| bad("is not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or_else(|| bad("has no scheme"))?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err(bad("must use http or https"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| bad("has no host"))?;
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(UpstreamConfig {
            scheme,
            authority,
            base_path,
            connect_timeout: Duration::from_millis(
                self.positive(&raw.connect_timeout_ms, "upstream.connect_timeout_ms")?,
            ),
            timeout: Duration::from_millis(self.positive(&raw.timeout_ms, "upstream.timeout_ms")?),
            ca: raw
                .ca
                .as_ref()
                .map(|v| self.path(v, "upstream.ca"))
                .transpose()?,
            max_poll_body_bytes: self
                .positive(&raw.max_poll_body_bytes, "upstream.max_poll_body_bytes")?
                as usize,
        })
    }

    fn auth(&self, raw: &RawAuth) -> Result<AuthConfig, ConfigError> {
        let validate = self.expand(&raw.validate, "auth.validate")?;
        if !validate.starts_with('/') {
            return Err(self.error(
                raw.validate.span(),
                "auth.validate",
                "must be an origin path starting with `/`",
            ));
        }
        if raw.sources.is_empty() {
            return Err(self.error(
                0..0,
                "auth.sources",
                "list at least one token source, for example [\"bearer\"]",
            ));
        }
        let mut sources = Vec::with_capacity(raw.sources.len());
        for (i, source) in raw.sources.iter().enumerate() {
            let key = format!("auth.sources[{i}]");
            let parsed = parse_token_source(source.get_ref())
                .map_err(|m| self.error(source.span(), &key, m))?;
            sources.push(parsed);
        }
        Ok(AuthConfig {
            validate,
            sources,
            cache_ttl: Duration::from_secs(self.positive(&raw.cache_ttl_s, "auth.cache_ttl_s")?),
            negative_ttl: Duration::from_secs(*raw.negative_ttl_s.get_ref()),
            cache_capacity: self.positive(&raw.cache_capacity, "auth.cache_capacity")?,
            max_validations_per_s: self
                .positive(&raw.max_validations_per_s, "auth.max_validations_per_s")?,
        })
    }

    fn sse(&self, raw: &RawSse) -> Result<SseConfig, ConfigError> {
        Ok(SseConfig {
            heartbeat: Duration::from_secs(self.positive(&raw.heartbeat_s, "sse.heartbeat_s")?),
            retry_ms: *raw.retry_ms.get_ref(),
            max_streams: self.positive(&raw.max_streams, "sse.max_streams")? as usize,
            max_streams_per_user: self
                .positive(&raw.max_streams_per_user, "sse.max_streams_per_user")?
                as usize,
            first_poll_wait: Duration::from_millis(*raw.first_poll_wait_ms.get_ref()),
            linger: Duration::from_millis(*raw.linger_ms.get_ref()),
            history_events: self.positive(&raw.history_events, "sse.history_events")? as usize,
            history_bytes: self.positive(&raw.history_bytes, "sse.history_bytes")? as usize,
            max_backoff: Duration::from_millis(
                self.positive(&raw.max_backoff_ms, "sse.max_backoff_ms")?,
            ),
        })
    }

    fn stream(&self, raw: &Spanned<RawStream>, index: usize) -> Result<StreamConfig, ConfigError> {
        let raw_stream = raw.get_ref();
        let key = format!("stream[{index}].path");
        let path_text = self.expand(&raw_stream.path, &key)?;
        let path = PathPattern::parse(&path_text)
            .map_err(|m| self.error(raw_stream.path.span(), &key, m))?;
        if raw_stream.source.is_empty() {
            return Err(self.error(
                raw.span(),
                &format!("stream[{index}].source"),
                "a stream needs at least one [[stream.source]] to poll",
            ));
        }
        let mut sources = Vec::with_capacity(raw_stream.source.len());
        let mut events = HashSet::new();
        for (i, source) in raw_stream.source.iter().enumerate() {
            let prefix = format!("stream[{index}].source[{i}]");
            let resolved = self.source(source.get_ref(), &path, &prefix)?;
            if !events.insert(resolved.event.clone()) {
                return Err(self.error(
                    source.get_ref().event.span(),
                    &format!("{prefix}.event"),
                    "another source of this stream already uses this event name",
                ));
            }
            sources.push(resolved);
        }
        Ok(StreamConfig {
            path,
            auth: raw_stream.auth,
            sources,
        })
    }

    fn source(
        &self,
        raw: &RawSource,
        path: &PathPattern,
        prefix: &str,
    ) -> Result<SourceConfig, ConfigError> {
        let poll_key = format!("{prefix}.poll");
        let poll_text = self.expand(&raw.poll, &poll_key)?;
        let poll = PollTemplate::parse(&poll_text, path)
            .map_err(|m| self.error(raw.poll.span(), &poll_key, m))?;
        let every =
            Duration::from_millis(self.positive(&raw.every_ms, &format!("{prefix}.every_ms"))?);
        let event = raw.event.get_ref().clone();
        if let Err(message) = check_event_name(&event) {
            return Err(self.error(raw.event.span(), &format!("{prefix}.event"), message));
        }
        let mode = match raw.mode.get_ref().as_str() {
            "snapshot" => {
                for (name, value) in [("items", raw.items.as_ref()), ("key", raw.key.as_ref())] {
                    if let Some(value) = value {
                        return Err(self.error(
                            value.span(),
                            &format!("{prefix}.{name}"),
                            "only `mode = \"items\"` uses this key",
                        ));
                    }
                }
                Mode::Snapshot
            }
            "items" => {
                let missing = |name: &str, example: &str| {
                    self.error(
                        raw.mode.span(),
                        &format!("{prefix}.{name}"),
                        format!("`mode = \"items\"` needs `{name}` ({example})"),
                    )
                };
                let pointer = raw
                    .items
                    .as_ref()
                    .ok_or_else(|| missing("items", "a JSON pointer such as \"/tickers\""))?;
                if !(pointer.get_ref().is_empty() || pointer.get_ref().starts_with('/')) {
                    return Err(self.error(
                        pointer.span(),
                        &format!("{prefix}.items"),
                        "a JSON pointer starts with `/` (or is empty for the whole document)",
                    ));
                }
                let key = raw.key.as_ref().ok_or_else(|| {
                    missing("key", "the field naming each item, such as \"symbol\"")
                })?;
                if key.get_ref().is_empty() {
                    return Err(self.error(
                        key.span(),
                        &format!("{prefix}.key"),
                        "must not be empty",
                    ));
                }
                Mode::Items {
                    pointer: pointer.get_ref().clone(),
                    key: key.get_ref().clone(),
                }
            }
            other => {
                return Err(self.error(
                    raw.mode.span(),
                    &format!("{prefix}.mode"),
                    format!("`{other}` is not a mode; use \"snapshot\" or \"items\""),
                ));
            }
        };
        let mut headers = Vec::with_capacity(raw.headers.len());
        for (name, value) in &raw.headers {
            let key = format!("{prefix}.headers.{name}");
            let header_name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| self.error(value.span(), &key, "is not a valid header name"))?;
            let expanded = self.expand(value, &key)?;
            let header_value = HeaderValue::from_str(&expanded).map_err(|_| {
                self.error(
                    value.span(),
                    &key,
                    "the value has characters a header cannot carry",
                )
            })?;
            headers.push((header_name, header_value));
        }
        let wait = raw
            .wait_s
            .as_ref()
            .map(|w| self.positive(w, &format!("{prefix}.wait_s")))
            .transpose()?
            .map(Duration::from_secs);
        Ok(SourceConfig {
            poll,
            every,
            event,
            mode,
            headers,
            wait,
        })
    }
}

/// Event names the proxy itself uses; a source must not take them.
pub const RESERVED_EVENTS: [&str; 2] = ["error", "resync"];

fn check_event_name(event: &str) -> Result<(), String> {
    if event.is_empty() || event.len() > 64 {
        return Err("must be 1 to 64 characters".to_owned());
    }
    if !event
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err("use letters, digits, `_`, `-` and `.` only".to_owned());
    }
    if RESERVED_EVENTS.contains(&event) {
        return Err(format!("`{event}` is reserved for the proxy's own events"));
    }
    Ok(())
}

fn parse_token_source(text: &str) -> Result<TokenSource, String> {
    let invalid = || {
        format!(
            "`{text}` is not a token source; use \"bearer\", a header name, \"query:NAME\" or \"cookie:NAME\""
        )
    };
    if text.eq_ignore_ascii_case("bearer") {
        return Ok(TokenSource::Bearer);
    }
    if let Some(name) = text.strip_prefix("query:") {
        return if name.is_empty() {
            Err(invalid())
        } else {
            Ok(TokenSource::Query(name.to_owned()))
        };
    }
    if let Some(name) = text.strip_prefix("cookie:") {
        return if name.is_empty() {
            Err(invalid())
        } else {
            Ok(TokenSource::Cookie(name.to_owned()))
        };
    }
    let header = text.strip_prefix("header:").unwrap_or(text);
    HeaderName::from_bytes(header.as_bytes())
        .map(TokenSource::Header)
        .map_err(|_| invalid())
}

/// Replaces each `${NAME}` with the variable's value; an unset variable is an error naming it.
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "`${` without a closing `}`".to_owned())?;
        let name = &after[..end];
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(format!(
                "`${{{name}}}` is not a valid environment variable name"
            ));
        }
        let value = env(name).ok_or_else(|| {
            format!("environment variable `{name}` is not set (used as `${{{name}}}`)")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = offset
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
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
        let text = include_str!("../proxy.toml");
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
