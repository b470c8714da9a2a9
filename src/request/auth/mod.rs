//! Authentication for `auth = true` stream routes.
//!
//! The token is looked for in the configured sources, in order (`source`), and judged by
//! the configured validator kind: an HTTP endpoint (`http`), RFC 7662 introspection
//! (`introspection`) or local JWT verification (`jwt`). Each token is judged at most once
//! per TTL: verdicts live in a moka cache keyed by a SHA-256 of the token (the raw token is
//! never stored or logged), and concurrent first requests for one token share a single
//! check. The validator's expiry caps a verdict's TTL. A rejection is remembered for
//! `negative_ttl`; a validator failure (unreachable, 5xx, a malformed answer) is a 503 and is
//! not cached, so the next request asks again.

mod answer;
mod http;
mod introspection;
mod jwks;
mod jwt;
mod source;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ::http::{HeaderMap, StatusCode};
use moka::Expiry;
use moka::future::Cache;

use crate::config::{AuthConfig, TokenSource, ValidatorConfig};
use crate::ops::metrics::{Limit, Metrics};
use crate::origin::Upstream;
use crate::stream::Identity;
use answer::Checked;

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

/// The configured validator kind.
enum Verifier {
    /// `kind = "http"`.
    Http(http::HttpVerifier),
    /// `kind = "introspection"`.
    Introspection(introspection::Introspector),
    /// `kind = "jwt"`.
    Jwt(jwt::JwtVerifier),
}

impl Verifier {
    /// Whether each check is a call to another server (and so held to the validation rate).
    fn calls_out(&self) -> bool {
        !matches!(self, Verifier::Jwt(_))
    }

    async fn check(&self, token: &str, upstream: &Upstream) -> Result<Checked, String> {
        match self {
            Verifier::Http(v) => v.check(token, upstream).await,
            Verifier::Introspection(v) => v.check(token, upstream).await,
            Verifier::Jwt(v) => v.check(token, upstream).await,
        }
    }
}

/// Why an authenticator could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The introspection client credentials cannot form a header.
    #[error("[auth] {0}")]
    Credentials(String),
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

/// Validates tokens with the configured validator, with a cache in front.
pub struct Authenticator {
    /// Sources, identity header and TTLs from `[auth]`.
    config: AuthConfig,
    /// The validator kind that judges tokens.
    verifier: Verifier,
    /// How a query token travels on polls: the way the `http` validator is sent tokens (the
    /// origin reads them that way), else as a bearer token.
    query_as: TokenSource,
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
    pub fn new(config: AuthConfig, metrics: Arc<Metrics>) -> Result<Authenticator, AuthSetupError> {
        let cache = Cache::builder()
            .max_capacity(config.cache_capacity)
            .expire_after(VerdictExpiry)
            .build();
        let query_as = match &config.validator {
            ValidatorConfig::Http(http) => http.send.clone(),
            _ => TokenSource::Bearer,
        };
        let verifier = match config.validator.clone() {
            ValidatorConfig::Http(c) => Verifier::Http(http::HttpVerifier::new(c)),
            ValidatorConfig::Introspection(c) => Verifier::Introspection(
                introspection::Introspector::new(c).map_err(AuthSetupError::Credentials)?,
            ),
            ValidatorConfig::Jwt(c) => Verifier::Jwt(jwt::JwtVerifier::new(c)),
        };
        Ok(Authenticator {
            rate: RateLimit::new(config.max_validations_per_s),
            config,
            verifier,
            query_as,
            cache,
            metrics,
        })
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
        let (source, token) =
            source::find_token(&self.config.sources, headers, query).ok_or_else(|| {
                let places: Vec<String> = self
                    .config
                    .sources
                    .iter()
                    .map(TokenSource::describe)
                    .collect();
                AuthError::Missing(places.join(", or "))
            })?;
        // Printable ASCII, and none of the separators that would let one token turn into
        // several values where it is sent on (`;` and `,` end a cookie or list item, `"` and
        // `\` quote): no token format in use (JWT, base64url, hex, UUID) has them.
        if token.is_empty()
            || token.len() > MAX_TOKEN_LEN
            || !token
                .bytes()
                .all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b',' | b'"' | b'\\'))
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
                user_header: self.config.identity_header.clone(),
                credential: source::credential(source, token, &self.query_as)?,
            }),
            Verdict::Rejected { status, detail, .. } => Err(AuthError::Rejected {
                status,
                detail: detail.to_string(),
            }),
        }
    }

    /// One check by the validator. `Err` means "could not tell" and is not cached.
    async fn validate(&self, token: &str, upstream: &Upstream) -> Result<Verdict, String> {
        if self.verifier.calls_out() && !self.rate.try_take() {
            self.metrics.limited(Limit::ValidationRate);
            return Err("too many new tokens to validate right now; try again shortly".to_owned());
        }
        Metrics::inc(&self.metrics.validator_calls);
        let checked = self
            .verifier
            .check(token, upstream)
            .await
            .inspect_err(|why| {
                tracing::warn!(%why, "the token validator failed");
            })?;
        let rejected = |status, detail: &str| Verdict::Rejected {
            status,
            detail: detail.into(),
            ttl: self.config.negative_ttl,
        };
        Ok(match checked {
            Checked::Valid {
                user_id,
                expires_at,
            } => {
                let ttl = match expires_at.map(time_left) {
                    None => self.config.cache_ttl,
                    Some(Some(left)) => left.min(self.config.cache_ttl),
                    Some(None) => return Ok(rejected(StatusCode::UNAUTHORIZED, "token expired")),
                };
                Verdict::Valid {
                    user_id: user_id.into(),
                    ttl,
                }
            }
            Checked::Rejected { status, detail } => rejected(status, &detail),
        })
    }
}

/// Time left until `at`; `None` when it has passed.
fn time_left(at: time::OffsetDateTime) -> Option<Duration> {
    let left = at - time::OffsetDateTime::now_utc();
    left.is_positive()
        .then(|| Duration::from_secs_f64(left.as_seconds_f64()))
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

    #[test]
    fn expiry_in_the_past_is_expired() {
        let now = time::OffsetDateTime::now_utc();
        assert!(time_left(now - time::Duration::seconds(1)).is_none());
        let left = time_left(now + time::Duration::hours(1)).expect("left");
        assert!(left > Duration::from_secs(3500) && left <= Duration::from_secs(3600));
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
}
