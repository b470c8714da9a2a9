//! `proxy.toml` as written: serde structs that keep each value's source span (`Spanned`)
//! for the resolver's error messages, unknown keys rejected, and the defaults.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) listen: RawListen,
    pub(super) tls: Option<RawTls>,
    pub(super) upstream: RawUpstream,
    pub(super) auth: Option<Spanned<RawAuth>>,
    #[serde(default)]
    pub(super) sse: RawSse,
    #[serde(default)]
    pub(super) stream: Vec<Spanned<RawStream>>,
    pub(super) cors: Option<Spanned<RawCors>>,
    pub(super) cluster: Option<Spanned<RawCluster>>,
}

/// `[cluster]`: several instances sharing pollers and history through Redis.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) redis: Spanned<String>,
    #[serde(default = "defaults::cluster_prefix")]
    pub(super) prefix: Spanned<String>,
    #[serde(default = "defaults::lease_ms")]
    pub(super) lease_ms: Spanned<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCors {
    pub(super) allow_origins: Spanned<RawOrigins>,
    #[serde(default)]
    pub(super) allow_credentials: bool,
    #[serde(default)]
    pub(super) expose_headers: Vec<Spanned<String>>,
    #[serde(default = "defaults::cors_allow_headers")]
    pub(super) allow_headers: Vec<Spanned<String>>,
    #[serde(default = "defaults::cors_max_age_s")]
    pub(super) max_age_s: Spanned<u64>,
}

/// `allow_origins = "*"` or a list of origins.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawOrigins {
    One(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub(super) https: Option<Spanned<String>>,
    pub(super) http: Option<Spanned<String>>,
    pub(super) admin: Option<Spanned<String>>,
    #[serde(default = "defaults::max_connections")]
    pub(super) max_connections: Spanned<u64>,
    #[serde(default = "defaults::tls_handshake_timeout_ms")]
    pub(super) tls_handshake_timeout_ms: Spanned<u64>,
    #[serde(default = "defaults::header_read_timeout_ms")]
    pub(super) header_read_timeout_ms: Spanned<u64>,
    #[serde(default = "defaults::write_timeout_ms")]
    pub(super) write_timeout_ms: Spanned<u64>,
    #[serde(default = "defaults::shutdown_grace_s")]
    pub(super) shutdown_grace_s: Spanned<u64>,
    #[serde(default = "defaults::max_streams_per_connection")]
    pub(super) max_streams_per_connection: Spanned<u64>,
    #[serde(default = "defaults::max_h2_control_frames_per_s")]
    pub(super) max_h2_control_frames_per_s: Spanned<u64>,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) keep_server_header: bool,
    /// Absent: one per core (resolved then, where the machine is known).
    #[serde(default)]
    pub(super) serving_threads: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Spanned<String>,
    pub(super) key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) url: Spanned<String>,
    #[serde(default = "defaults::connect_timeout_ms")]
    pub(super) connect_timeout_ms: Spanned<u64>,
    #[serde(default = "defaults::timeout_ms")]
    pub(super) timeout_ms: Spanned<u64>,
    pub(super) ca: Option<Spanned<String>>,
    #[serde(default = "defaults::max_poll_body_bytes")]
    pub(super) max_poll_body_bytes: Spanned<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    #[serde(default = "defaults::auth_kind")]
    pub(super) kind: Spanned<String>,
    #[serde(default = "defaults::identity_header")]
    pub(super) identity_header: Spanned<String>,
    // The keys of every validator kind, each optional here: the resolver says which kind
    // needs or forbids it.
    pub(super) validate: Option<Spanned<String>>,
    pub(super) method: Option<Spanned<String>>,
    pub(super) send: Option<Spanned<String>>,
    pub(super) valid_status: Option<Spanned<Vec<u16>>>,
    pub(super) reject_status: Option<Spanned<Vec<u16>>>,
    pub(super) valid: Option<Spanned<String>>,
    pub(super) user_id: Option<Spanned<String>>,
    pub(super) expires_at: Option<Spanned<String>>,
    pub(super) introspect: Option<Spanned<String>>,
    pub(super) client_id: Option<Spanned<String>>,
    pub(super) client_secret: Option<Spanned<String>>,
    pub(super) jwks_url: Option<Spanned<String>>,
    pub(super) issuer: Option<Spanned<String>>,
    pub(super) audience: Option<Spanned<Vec<String>>>,
    pub(super) algorithms: Option<Spanned<Vec<String>>>,
    pub(super) leeway_s: Option<Spanned<u64>>,
    pub(super) jwks_min_refresh_ms: Option<Spanned<u64>>,
    #[serde(default = "defaults::sources")]
    pub(super) sources: Vec<Spanned<String>>,
    #[serde(default = "defaults::cache_ttl_s")]
    pub(super) cache_ttl_s: Spanned<u64>,
    #[serde(default = "defaults::negative_ttl_s")]
    pub(super) negative_ttl_s: Spanned<u64>,
    #[serde(default = "defaults::cache_capacity")]
    pub(super) cache_capacity: Spanned<u64>,
    #[serde(default = "defaults::max_validations_per_s")]
    pub(super) max_validations_per_s: Spanned<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSse {
    #[serde(default = "defaults::heartbeat_s")]
    pub(super) heartbeat_s: Spanned<u64>,
    #[serde(default = "defaults::retry_ms")]
    pub(super) retry_ms: Spanned<u64>,
    #[serde(default = "defaults::max_streams")]
    pub(super) max_streams: Spanned<u64>,
    #[serde(default = "defaults::max_streams_per_user")]
    pub(super) max_streams_per_user: Spanned<u64>,
    #[serde(default = "defaults::first_poll_wait_ms")]
    pub(super) first_poll_wait_ms: Spanned<u64>,
    #[serde(default = "defaults::linger_ms")]
    pub(super) linger_ms: Spanned<u64>,
    #[serde(default = "defaults::history_events")]
    pub(super) history_events: Spanned<u64>,
    #[serde(default = "defaults::history_bytes")]
    pub(super) history_bytes: Spanned<u64>,
    #[serde(default = "defaults::max_backoff_ms")]
    pub(super) max_backoff_ms: Spanned<u64>,
    #[serde(default = "defaults::refusal_ttl_s")]
    pub(super) refusal_ttl_s: Spanned<u64>,
    #[serde(default = "defaults::refusal_capacity")]
    pub(super) refusal_capacity: Spanned<u64>,
    #[serde(default = "defaults::resume_window_s")]
    pub(super) resume_window_s: Spanned<u64>,
    #[serde(default = "defaults::resume_memory_bytes")]
    pub(super) resume_memory_bytes: Spanned<u64>,
    #[serde(default = "defaults::max_streams_per_ip")]
    pub(super) max_streams_per_ip: Spanned<u64>,
    #[serde(default = "defaults::outage_event")]
    pub(super) outage_event: Spanned<String>,
    #[serde(default = "defaults::refused_event")]
    pub(super) refused_event: Spanned<String>,
    #[serde(default = "defaults::unavailable_event")]
    pub(super) unavailable_event: Spanned<String>,
    #[serde(default = "defaults::resync_event")]
    pub(super) resync_event: Spanned<String>,
    pub(super) heartbeat_event: Option<Spanned<String>>,
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
            refusal_ttl_s: defaults::refusal_ttl_s(),
            refusal_capacity: defaults::refusal_capacity(),
            resume_window_s: defaults::resume_window_s(),
            resume_memory_bytes: defaults::resume_memory_bytes(),
            max_streams_per_ip: defaults::max_streams_per_ip(),
            outage_event: defaults::outage_event(),
            refused_event: defaults::refused_event(),
            unavailable_event: defaults::unavailable_event(),
            resync_event: defaults::resync_event(),
            heartbeat_event: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStream {
    pub(super) path: Spanned<String>,
    #[serde(default)]
    pub(super) auth: bool,
    #[serde(default)]
    pub(super) source: Vec<Spanned<RawSource>>,
    #[serde(default)]
    pub(super) query: Vec<Spanned<String>>,
    #[serde(default = "defaults::query_case")]
    pub(super) query_case: Spanned<String>,
    #[serde(default = "defaults::query_max_values")]
    pub(super) query_max_values: Spanned<u64>,
    pub(super) max_keys: Option<Spanned<u64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) poll: Spanned<String>,
    #[serde(default = "defaults::every_ms")]
    pub(super) every_ms: Spanned<u64>,
    pub(super) event: Spanned<String>,
    #[serde(default = "defaults::mode")]
    pub(super) mode: Spanned<String>,
    pub(super) items: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, Spanned<String>>,
    pub(super) wait_s: Option<Spanned<u64>>,
}

/// Default values, one function each because serde's `default = "path"` needs a function.
pub(super) mod defaults {
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
    pub fn auth_kind() -> Spanned<String> {
        at0("http".to_owned())
    }
    pub fn identity_header() -> Spanned<String> {
        at0("x-edge-user".to_owned())
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
        // Under CloudFront's 30 s origin idle timeout with room for a slow tick.
        at0(15)
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
    pub fn refusal_ttl_s() -> Spanned<u64> {
        at0(5)
    }
    pub fn refusal_capacity() -> Spanned<u64> {
        at0(10_000)
    }
    pub fn cluster_prefix() -> Spanned<String> {
        at0("sse-edge".to_owned())
    }
    pub fn lease_ms() -> Spanned<u64> {
        at0(5_000)
    }
    pub fn resume_window_s() -> Spanned<u64> {
        at0(60)
    }
    pub fn resume_memory_bytes() -> Spanned<u64> {
        at0(64 * 1024 * 1024)
    }
    pub fn every_ms() -> Spanned<u64> {
        at0(5_000)
    }
    pub fn mode() -> Spanned<String> {
        at0("snapshot".to_owned())
    }
    // Limits on one client: HTTP/2 streams per connection (RFC 9113 §6.5.2 advises no fewer
    // than 100), control frames per connection, event streams per address.
    pub fn max_streams_per_connection() -> Spanned<u64> {
        at0(100)
    }
    pub fn max_h2_control_frames_per_s() -> Spanned<u64> {
        at0(5_000)
    }
    pub fn max_streams_per_ip() -> Spanned<u64> {
        at0(256)
    }
    pub fn outage_event() -> Spanned<String> {
        at0("upstream_error".to_owned())
    }
    pub fn refused_event() -> Spanned<String> {
        at0("stream_refused".to_owned())
    }
    pub fn unavailable_event() -> Spanned<String> {
        at0("unavailable".to_owned())
    }
    pub fn resync_event() -> Spanned<String> {
        at0("resync".to_owned())
    }
    pub fn query_case() -> Spanned<String> {
        at0("preserve".to_owned())
    }
    pub fn query_max_values() -> Spanned<u64> {
        at0(crate::http::query::DEFAULT_MAX_VALUES as u64)
    }
    pub fn cors_allow_headers() -> Vec<Spanned<String>> {
        vec![
            at0("authorization".to_owned()),
            at0("last-event-id".to_owned()),
        ]
    }
    pub fn cors_max_age_s() -> Spanned<u64> {
        at0(600)
    }
}
