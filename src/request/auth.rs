//! Authentication for `auth = true` stream routes.
//!
//! The token is looked for in the configured sources, in order. It is checked against the
//! origin's validator at most once per token per TTL: verdicts live in a moka cache keyed by a
//! SHA-256 of the token (the raw token is never stored or logged), and concurrent first
//! requests for one token share a single validator call. A rejection is remembered for
//! `negative_ttl`; a validator failure (unreachable, 5xx, garbage) is a 503 and is not cached,
//! so the next request asks again.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, StatusCode, header};
use moka::Expiry;
use moka::future::Cache;

use crate::config::{AuthConfig, TokenSource};
use crate::http::json::origin_detail;
use crate::http::query::query_param;
use crate::ops::metrics::{Limit, Metrics};
use crate::origin::Upstream;
use crate::stream::Identity;

/// Longest token accepted; anything longer is rejected without asking the origin.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Why a request could not be authenticated.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token in any configured source; lists where one may be sent.
    #[error("missing credentials: send a token as {0}")]
    Missing(String),
    /// The token is malformed, or the validator rejected it (cached for `negative_ttl`).
    #[error("{detail}")]
    Rejected {
        /// 401 or 403.
        status: StatusCode,
        /// Why, as the validator said it or as the proxy judged it.
        detail: String,
    },
    /// A valid token that cannot be sent on as a header value.
    #[error("token cannot be forwarded as a header")]
    Unforwardable,
    /// The validator could not tell (unreachable, 5xx, garbage, rate-limited): not cached.
    #[error("could not validate credentials: {0}")]
    Unavailable(String),
}

/// The validator's answer for one token, as cached.
#[derive(Debug, Clone)]
enum Verdict {
    /// Valid; trusted until `ttl` has passed.
    Valid { user_id: Arc<str>, ttl: Duration },
    /// Rejected with this status and detail; remembered for the negative TTL.
    Rejected {
        status: StatusCode,
        detail: Arc<str>,
        ttl: Duration,
    },
}

/// Gives each cache entry the lifetime its verdict carries.
struct VerdictExpiry;

impl Expiry<[u8; 32], Verdict> for VerdictExpiry {
    fn expire_after_create(
        &self,
        _key: &[u8; 32],
        value: &Verdict,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match value {
            Verdict::Valid { ttl, .. } | Verdict::Rejected { ttl, .. } => *ttl,
        })
    }
}

/// Validates tokens against the origin, with a cache in front.
pub struct Authenticator {
    /// Sources, validator path and TTLs from `[auth]`.
    config: AuthConfig,
    /// Verdicts by token digest.
    cache: Cache<[u8; 32], Verdict>,
    /// Cache hits, validator calls and rejections are counted here.
    metrics: Arc<Metrics>,
    /// Bounds validator calls, so a flood of random tokens cannot flood the origin.
    rate: RateLimit,
}

/// A token bucket: `rate` calls a second, with a burst of `rate`.
struct RateLimit {
    rate: f64,
    /// Tokens left and when they were last refilled.
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimit {
    fn new(rate: u64) -> RateLimit {
        let rate = rate as f64;
        RateLimit {
            rate,
            bucket: Mutex::new((rate, Instant::now())),
        }
    }

    fn try_take(&self) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * self.rate;
        *bucket = ((bucket.0 + refill).min(self.rate), now);
        if bucket.0 >= 1.0 {
            bucket.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Authenticator {
    /// An authenticator with an empty cache bounded by `cache_capacity`.
    pub fn new(config: AuthConfig, metrics: Arc<Metrics>) -> Authenticator {
        let cache = Cache::builder()
            .max_capacity(config.cache_capacity)
            .expire_after(VerdictExpiry)
            .build();
        Authenticator {
            rate: RateLimit::new(config.max_validations_per_s),
            config,
            cache,
            metrics,
        }
    }

    /// Finds, validates and returns the caller's identity, or the error to answer with.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        upstream: &Upstream,
    ) -> Result<Identity, AuthError> {
        let result = self.check(headers, query, upstream).await;
        if matches!(
            result,
            Err(AuthError::Missing(_) | AuthError::Rejected { .. })
        ) {
            Metrics::inc(&self.metrics.auth_rejects);
        }
        result
    }

    async fn check(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        upstream: &Upstream,
    ) -> Result<Identity, AuthError> {
        let token = self.find_token(headers, query).ok_or_else(|| {
            let places: Vec<String> = self
                .config
                .sources
                .iter()
                .map(TokenSource::describe)
                .collect();
            AuthError::Missing(places.join(", or "))
        })?;
        if token.is_empty()
            || token.len() > MAX_TOKEN_LEN
            || !token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(AuthError::Rejected {
                status: StatusCode::UNAUTHORIZED,
                detail: "malformed token".to_owned(),
            });
        }
        let key = digest(token);
        let verdict = match self.cache.get(&key).await {
            Some(verdict) => {
                Metrics::inc(&self.metrics.auth_cache_hits);
                verdict
            }
            None => self
                .cache
                .try_get_with(key, self.validate(token, upstream))
                .await
                .map_err(|e| AuthError::Unavailable(e.to_string()))?,
        };
        match verdict {
            Verdict::Valid { user_id, .. } => Ok(Identity {
                user_id: user_id.to_string(),
                authorization: forwarded_authorization(headers, token)?,
            }),
            Verdict::Rejected { status, detail, .. } => Err(AuthError::Rejected {
                status,
                detail: detail.to_string(),
            }),
        }
    }

    fn find_token<'a>(&self, headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
        self.config.sources.iter().find_map(|source| {
            let token = match source {
                TokenSource::Bearer => headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        let (scheme, rest) = v.split_once(' ')?;
                        scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
                    }),
                TokenSource::Header(name) => headers.get(name).and_then(|v| v.to_str().ok()),
                TokenSource::Query(name) => query.and_then(|q| query_param(q, name)),
                TokenSource::Cookie(name) => headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .flat_map(|v| v.split(';'))
                    .find_map(|pair| {
                        let (k, v) = pair.trim().split_once('=')?;
                        (k == name).then_some(v)
                    }),
            }?;
            Some(token)
        })
    }

    /// One call to the origin's validator. `Err` means "could not tell" and is not cached.
    async fn validate(&self, token: &str, upstream: &Upstream) -> Result<Verdict, String> {
        if !self.rate.try_take() {
            self.metrics.limited(Limit::ValidationRate);
            return Err("too many new tokens to validate right now; try again shortly".to_owned());
        }
        Metrics::inc(&self.metrics.validator_calls);
        let mut headers = HeaderMap::new();
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "token cannot be sent as a header".to_owned())?;
        headers.insert(header::AUTHORIZATION, bearer);
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let fetched = upstream
            .fetch(&self.config.validate, headers, Duration::ZERO)
            .await
            .map_err(|e| e.to_string())?;
        match fetched.status {
            StatusCode::OK => {
                let answer: ValidatorAnswer =
                    serde_json::from_slice(&fetched.body).map_err(|e| {
                        format!("validator answered 200 without a usable JSON body: {e}")
                    })?;
                let user_id = answer.user_id()?;
                let ttl = match answer.expires_at.as_deref().map(seconds_until) {
                    Some(Some(left)) => left.min(self.config.cache_ttl),
                    Some(None) => {
                        return Ok(Verdict::Rejected {
                            status: StatusCode::UNAUTHORIZED,
                            detail: "token expired".into(),
                            ttl: self.config.negative_ttl,
                        });
                    }
                    None => self.config.cache_ttl,
                };
                Ok(Verdict::Valid {
                    user_id: user_id.into(),
                    ttl,
                })
            }
            status @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => Ok(Verdict::Rejected {
                status,
                detail: origin_detail(&fetched.body)
                    .unwrap_or_else(|| "invalid or expired token".to_owned())
                    .into(),
                ttl: self.config.negative_ttl,
            }),
            other => Err(format!("validator answered {other}")),
        }
    }
}

/// The validator's JSON: `{"user_id": ..., "expires_at": optional RFC 3339}`.
#[derive(serde::Deserialize)]
struct ValidatorAnswer {
    user_id: serde_json::Value,
    expires_at: Option<String>,
}

impl ValidatorAnswer {
    fn user_id(&self) -> Result<String, String> {
        let id = match &self.user_id {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return Err("validator's user_id is neither a string nor a number".to_owned()),
        };
        let usable = !id.is_empty() && id.len() <= 256 && id.bytes().all(|b| b.is_ascii_graphic());
        if usable {
            Ok(id)
        } else {
            Err("validator's user_id is empty, too long or not printable ASCII".to_owned())
        }
    }
}

/// Time left until an RFC 3339 instant; `None` when it has passed (or cannot be read,
/// which is treated as expired rather than trusted forever).
fn seconds_until(expires_at: &str) -> Option<Duration> {
    let at =
        time::OffsetDateTime::parse(expires_at, &time::format_description::well_known::Rfc3339)
            .ok()?;
    let left = at - time::OffsetDateTime::now_utc();
    (left.is_positive()).then(|| Duration::from_secs_f64(left.as_seconds_f64()))
}

/// The caller's own `Authorization`, or `Bearer <token>` when the token came from elsewhere.
fn forwarded_authorization(headers: &HeaderMap, token: &str) -> Result<HeaderValue, AuthError> {
    if let Some(own) = headers.get(header::AUTHORIZATION) {
        return Ok(own.clone());
    }
    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| AuthError::Unforwardable)
}

fn digest(token: &str) -> [u8; 32] {
    let hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(hash.as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(sources: Vec<TokenSource>) -> Authenticator {
        Authenticator::new(
            AuthConfig {
                validate: "/v".into(),
                sources,
                cache_ttl: Duration::from_secs(60),
                negative_ttl: Duration::from_secs(5),
                cache_capacity: 10,
                max_validations_per_s: 10,
            },
            Arc::default(),
        )
    }

    #[test]
    fn tokens_are_found_in_source_order() {
        let a = auth(vec![
            TokenSource::Bearer,
            TokenSource::Header(http::HeaderName::from_static("x-user-id")),
            TokenSource::Query("user_token".into()),
            TokenSource::Cookie("sid".into()),
        ]);
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static("from-header"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sid=from-cookie"),
        );
        let found = a.find_token(&headers, Some("user_token=from-query"));
        assert_eq!(found, Some("from-header"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  from-bearer "),
        );
        assert_eq!(a.find_token(&headers, None), Some("from-bearer"));
        assert_eq!(
            a.find_token(&HeaderMap::new(), Some("x=1&user_token=q")),
            Some("q")
        );
        let mut cookie_only = HeaderMap::new();
        cookie_only.insert(header::COOKIE, HeaderValue::from_static("sid=c"));
        assert_eq!(a.find_token(&cookie_only, None), Some("c"));
        assert!(a.find_token(&HeaderMap::new(), Some("other=1")).is_none());
    }

    proptest::proptest! {
        #[test]
        fn token_lookup_survives_any_input_and_returns_part_of_it(
            authorization in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            cookie in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            query in ".{0,80}",
        ) {
            let a = auth(vec![
                TokenSource::Bearer,
                TokenSource::Cookie("sid".into()),
                TokenSource::Query("user_token".into()),
            ]);
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&authorization) {
                headers.insert(header::AUTHORIZATION, value);
            }
            if let Ok(value) = HeaderValue::from_bytes(&cookie) {
                headers.insert(header::COOKIE, value);
            }
            if let Some(token) = a.find_token(&headers, Some(&query)) {
                let inputs = [
                    String::from_utf8_lossy(&authorization).into_owned(),
                    String::from_utf8_lossy(&cookie).into_owned(),
                    query.clone(),
                ];
                proptest::prop_assert!(inputs.iter().any(|i| i.contains(token)));
            }
        }
    }

    #[test]
    fn basic_auth_is_not_a_bearer_token() {
        let a = auth(vec![TokenSource::Bearer]);
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(a.find_token(&headers, None).is_none());
    }

    #[test]
    fn query_tokens_are_forwarded_as_bearer() {
        let value = forwarded_authorization(&HeaderMap::new(), "abc").expect("header");
        assert_eq!(value, "Bearer abc");
    }

    #[test]
    fn expiry_in_the_past_or_unreadable_is_expired() {
        assert!(seconds_until("2000-01-01T00:00:00Z").is_none());
        assert!(seconds_until("tomorrow").is_none());
        assert!(seconds_until("2999-01-01T00:00:00Z").is_some());
    }

    #[test]
    fn the_rate_limit_allows_a_burst_then_refills() {
        let limit = RateLimit::new(3);
        assert!((0..3).all(|_| limit.try_take()));
        assert!(!limit.try_take());
        limit.bucket.lock().expect("bucket").1 -= Duration::from_millis(400);
        assert!(limit.try_take(), "one token back after a third of a second");
        assert!(!limit.try_take());
    }

    #[test]
    fn user_ids_are_checked() {
        let ok: ValidatorAnswer = serde_json::from_str(r#"{"user_id": 42}"#).expect("json");
        assert_eq!(ok.user_id().as_deref(), Ok("42"));
        let bad: ValidatorAnswer = serde_json::from_str(r#"{"user_id": "a\nb"}"#).expect("json");
        assert!(bad.user_id().is_err());
    }
}
