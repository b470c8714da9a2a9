//! Resolution: raw → typed, with errors that point at the file, the line and the key.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};
use toml::Spanned;

use super::env::{expand_env, line_column};
use super::raw::*;
use super::*;
use crate::http::path::{PathPattern, PollTemplate};

/// Longest cache lifetime a key may set (7 days).
const MAX_TTL_S: u64 = 7 * 24 * 3600;

/// Most `[listen] trusted_proxies` ranges: each request's peer is checked against all of them.
const MAX_TRUSTED_PROXIES: usize = 256;
/// Most `[listen] serving_threads`: beyond the cores a machine has, more threads only share them.
const MAX_SERVING_THREADS: u64 = 256;
mod browser;
mod cluster;

/// Where errors are reported and how placeholders are filled.
pub(super) struct Resolver<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
    pub(super) base_dir: &'a Path,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    /// Problems found so far: resolution goes on after one, so `sse-edge check` can list
    /// every problem in the file at once.
    pub(super) problems: std::cell::RefCell<Vec<ConfigError>>,
}

impl Resolver<'_> {
    pub(super) fn error(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::Invalid {
            file: self.file.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// The value, or `None` with its error recorded in [`Resolver::problems`].
    fn keep<T>(&self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|e| self.problems.borrow_mut().push(e)).ok()
    }

    /// Every recorded problem, in file order: one as itself, several together.
    fn finish(&self) -> Result<(), ConfigError> {
        let mut problems = self.problems.take();
        problems.sort_by_key(|p| match p {
            ConfigError::Invalid { line, column, .. } => (*line, *column),
            _ => (0, 0),
        });
        match problems.len() {
            0 => Ok(()),
            1 => Err(problems.remove(0)),
            _ => Err(ConfigError::Several(problems)),
        }
    }

    /// Expands `${NAME}` placeholders in a string value.
    pub(super) fn expand(&self, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        expand_env(value.get_ref(), self.env).map_err(|m| self.error(value.span(), key, m))
    }

    pub(super) fn positive(&self, value: &Spanned<u64>, key: &str) -> Result<u64, ConfigError> {
        match *value.get_ref() {
            0 => Err(self.error(value.span(), key, "must be greater than 0")),
            n => Ok(n),
        }
    }

    /// A lifetime in seconds for a cache entry: at most [`MAX_TTL_S`] (the cache refuses
    /// lifetimes of centuries, and no verdict or state should outlive a week unasked).
    pub(super) fn ttl(&self, value: &Spanned<u64>, key: &str) -> Result<Duration, ConfigError> {
        match *value.get_ref() {
            n if n > MAX_TTL_S => Err(self.error(
                value.span(),
                key,
                format!("must be at most {MAX_TTL_S} s (7 days)"),
            )),
            n => Ok(Duration::from_secs(n)),
        }
    }

    pub(super) fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listen = self.keep(self.listen(&raw.listen));
        let tls = self.keep(raw.tls.as_ref().map(|t| self.tls(t)).transpose());
        let https = listen.as_ref().is_some_and(|l| l.https.is_some());
        if https && matches!(tls, Some(None)) {
            let span = raw.listen.https.as_ref().map_or(0..0, |s| s.span());
            self.keep::<()>(Err(self.error(
                span,
                "listen.https",
                "an HTTPS listener needs a [tls] table with `cert` and `key`",
            )));
        }
        if listen
            .as_ref()
            .is_some_and(|l| l.https.is_none() && l.http.is_none())
        {
            self.keep::<()>(Err(self.error(
                0..0,
                "listen",
                "no listener: set `https`, `http` or both",
            )));
        }
        let upstream = self.keep(self.upstream(&raw.upstream));
        let auth = self.keep(raw.auth.as_ref().map(|a| self.auth(a)).transpose());
        let sse = self.keep(self.sse(&raw.sse));
        let cors = self.keep(raw.cors.as_ref().map(|c| self.cors(c)).transpose());
        let cluster = self.keep(raw.cluster.as_ref().map(|c| self.cluster(c)).transpose());
        if let (Some(sse), Some(upstream)) = (&sse, &upstream)
            && sse.history_bytes < upstream.max_poll_body_bytes
        {
            self.keep::<()>(Err(self.error(
                raw.sse.history_bytes.span(),
                "sse.history_bytes",
                format!(
                    "must be at least upstream.max_poll_body_bytes ({}): the events of one large \
                     poll would not fit in the history, and every client would be resynced",
                    upstream.max_poll_body_bytes
                ),
            )));
        }
        // What routes take from `[sse]`; when `[sse]` has a problem (already reported), the
        // routes are still checked, against the defaults.
        let route_defaults = match &sse {
            Some(sse) => (sse.events.clone(), sse.max_streams),
            None => (Arc::default(), *defaults::max_streams().get_ref() as usize),
        };
        let mut streams = Vec::with_capacity(raw.stream.len());
        let mut seen_paths = HashSet::new();
        for (index, stream) in raw.stream.iter().enumerate() {
            let Some(resolved) = self.keep(self.stream(stream, index, &route_defaults)) else {
                continue;
            };
            let resolved_auth = auth.as_ref().and_then(Option::as_ref);
            self.keep(self.query_is_not_a_token(stream, &resolved, resolved_auth, index));
            if resolved.auth && matches!(auth, Some(None)) {
                self.keep::<()>(Err(self.error(
                    stream.span(),
                    &format!("stream[{index}].auth"),
                    "`auth = true` needs an [auth] table",
                )));
            }
            if !seen_paths.insert(resolved.path.to_string()) {
                self.keep::<()>(Err(self.error(
                    stream.get_ref().path.span(),
                    &format!("stream[{index}].path"),
                    "the same path is declared by an earlier [[stream]]",
                )));
            }
            streams.push(resolved);
        }
        self.finish()?;
        match (listen, tls, upstream, auth, sse, cors, cluster) {
            (
                Some(listen),
                Some(tls),
                Some(upstream),
                Some(auth),
                Some(sse),
                Some(cors),
                Some(cluster),
            ) => Ok(Config {
                listen,
                tls,
                upstream,
                auth,
                sse,
                streams,
                cors,
                cluster,
            }),
            // Unreachable in practice: a missing part recorded its problem, and `finish`
            // returned it.
            _ => Err(self.error(0..0, "(config)", "invalid")),
        }
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
            serving_threads: self.serving_threads(&raw.serving_threads)?,
            max_streams_per_connection: self.positive_u32(
                &raw.max_streams_per_connection,
                "listen.max_streams_per_connection",
            )?,
            max_h2_control_frames_per_s: self.positive_u32(
                &raw.max_h2_control_frames_per_s,
                "listen.max_h2_control_frames_per_s",
            )?,
            trusted_proxies: self.trusted_proxies(&raw.trusted_proxies)?,
            keep_server_header: raw.keep_server_header,
        })
    }

    /// `[listen] serving_threads`: 0 (the shared runtime), or at most [`MAX_SERVING_THREADS`];
    /// absent, one per core the process may run on (its CPU affinity and cgroup quota).
    fn serving_threads(&self, value: &Option<Spanned<u64>>) -> Result<usize, ConfigError> {
        let Some(value) = value else {
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            return Ok(cores.min(MAX_SERVING_THREADS as usize));
        };
        match *value.get_ref() {
            n if n > MAX_SERVING_THREADS => Err(self.error(
                value.span(),
                "listen.serving_threads",
                format!("must be at most {MAX_SERVING_THREADS} (one per core is the point)"),
            )),
            n => Ok(n as usize),
        }
    }

    /// A positive value that fits the 32 bits HTTP/2 settings and frame counters use.
    fn positive_u32(&self, value: &Spanned<u64>, key: &str) -> Result<u32, ConfigError> {
        let n = self.positive(value, key)?;
        u32::try_from(n)
            .map_err(|_| self.error(value.span(), key, format!("must be at most {}", u32::MAX)))
    }

    /// `[listen] trusted_proxies`: CIDR ranges, each checked on its own line.
    fn trusted_proxies(&self, raw: &[Spanned<String>]) -> Result<Vec<Cidr>, ConfigError> {
        if raw.len() > MAX_TRUSTED_PROXIES {
            return Err(self.error(
                raw[MAX_TRUSTED_PROXIES].span(),
                "listen.trusted_proxies",
                format!("at most {MAX_TRUSTED_PROXIES} ranges; merge neighbouring ones"),
            ));
        }
        raw.iter()
            .enumerate()
            .map(|(i, value)| {
                let key = format!("listen.trusted_proxies[{i}]");
                let text = self.expand(value, &key)?;
                Cidr::parse(text.trim()).map_err(|m| self.error(value.span(), &key, m))
            })
            .collect()
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
            refusal_ttl: self.ttl(&raw.refusal_ttl_s, "sse.refusal_ttl_s")?,
            refusal_capacity: self.positive(&raw.refusal_capacity, "sse.refusal_capacity")?,
            resume_window: self.resume_window(raw)?,
            resume_memory_bytes: self
                .positive(&raw.resume_memory_bytes, "sse.resume_memory_bytes")?,
            max_streams_per_ip: self.positive(&raw.max_streams_per_ip, "sse.max_streams_per_ip")?
                as usize,
            events: Arc::new(self.event_names(raw)?),
        })
    }

    /// `sse.resume_window_s`: at least twice the advised reconnect delay, so a client that
    /// reconnects as told (even after a failed attempt) still finds its history.
    fn resume_window(&self, raw: &RawSse) -> Result<Duration, ConfigError> {
        let window = *raw.resume_window_s.get_ref();
        let retry_ms = *raw.retry_ms.get_ref();
        if u128::from(window) * 1000 < 2 * u128::from(retry_ms) {
            // Left at its default, the window is too short because of `retry_ms`: point there.
            let span = match raw.resume_window_s.span() {
                span if span.is_empty() => raw.retry_ms.span(),
                span => span,
            };
            return Err(self.error(
                span,
                "sse.resume_window_s",
                format!(
                    "{window} s must be at least 2 × sse.retry_ms ({retry_ms} ms), so a client \
                     that reconnects as advised still finds its history"
                ),
            ));
        }
        self.ttl(&raw.resume_window_s, "sse.resume_window_s")
    }

    fn stream(
        &self,
        raw: &Spanned<RawStream>,
        index: usize,
        (events, max_streams): &(Arc<EventNames>, usize),
    ) -> Result<StreamConfig, ConfigError> {
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
        let query = self.query_keys(raw_stream, &path, index)?;
        let mut sources = Vec::with_capacity(raw_stream.source.len());
        let mut names = HashSet::new();
        for (i, source) in raw_stream.source.iter().enumerate() {
            let prefix = format!("stream[{index}].source[{i}]");
            let resolved = self.source(source.get_ref(), &path, &query.names, &prefix)?;
            // An items source also sends `<event>_removed`: neither may be a proxy event.
            let removals = matches!(resolved.mode, Mode::Items { .. })
                .then(|| format!("{}_removed", resolved.event));
            if let Some(taken) = events
                .all()
                .find(|name| resolved.event == *name || removals.as_deref() == Some(*name))
            {
                return Err(self.error(
                    source.get_ref().event.span(),
                    &format!("{prefix}.event"),
                    format!("`{taken}` is one of the proxy's own event names ([sse] *_event)"),
                ));
            }
            if !names.insert(resolved.event.clone()) {
                return Err(self.error(
                    source.get_ref().event.span(),
                    &format!("{prefix}.event"),
                    "another source of this stream already uses this event name",
                ));
            }
            sources.push(resolved);
        }
        Ok(StreamConfig {
            index,
            path,
            auth: raw_stream.auth,
            sources,
            query,
            max_keys: match &raw_stream.max_keys {
                Some(max) => self.positive(max, &format!("stream[{index}].max_keys"))? as usize,
                None => *max_streams,
            },
            events: events.clone(),
        })
    }

    fn source(
        &self,
        raw: &RawSource,
        path: &PathPattern,
        query: &[String],
        prefix: &str,
    ) -> Result<SourceConfig, ConfigError> {
        let poll_key = format!("{prefix}.poll");
        let poll_text = self.expand(&raw.poll, &poll_key)?;
        let poll = PollTemplate::parse(&poll_text, path, query)
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

/// Event names no source and no `[sse] *_event` may take: `error` is what `EventSource`
/// fires on a broken connection (`onerror`), so a page could not tell the two apart. The
/// proxy's own names are configured (`[sse] *_event`) and checked per route.
pub const RESERVED_EVENTS: [&str; 1] = ["error"];

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
        return Err(format!(
            "`{event}` is reserved: `EventSource` fires `error` for a broken connection"
        ));
    }
    Ok(())
}
