//! `kind = "jwt"`: JWTs verified locally against the issuer's JWKS; no call per token.
//!
//! The header's `alg` must be on the allow-list (which never holds `none` or HMAC), the key
//! is found by `kid` and must be of that algorithm's kind, and the signature, `iss`, `aud`
//! (when configured), `exp` and `nbf` are checked with the configured leeway.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::Value;

use super::answer::{self, Checked};
use super::jwks::Jwks;
use crate::config::JwtConfig;
use crate::origin::Upstream;

/// How the token is named in failures.
const WHO: &str = "the token";

/// Verifies tokens of one issuer.
pub(super) struct JwtVerifier {
    /// Issuer, audience, algorithms, user claim, leeway.
    config: JwtConfig,
    /// The issuer's keys.
    jwks: Jwks,
}

impl JwtVerifier {
    pub(super) fn new(config: JwtConfig) -> JwtVerifier {
        JwtVerifier {
            jwks: Jwks::new(config.jwks_url.clone(), config.min_refresh),
            config,
        }
    }

    /// Verifies one token. `Err` only when the key set could not be fetched.
    pub(super) async fn check(&self, token: &str, upstream: &Upstream) -> Result<Checked, String> {
        let Ok(header) = decode_header(token) else {
            return Ok(Checked::unauthorized("not a JWT"));
        };
        if !self.config.algorithms.contains(&header.alg) {
            return Ok(Checked::unauthorized(format!(
                "tokens signed with {:?} are not accepted",
                header.alg
            )));
        }
        let Some(key) = self
            .jwks
            .key(header.kid.as_deref(), header.alg, upstream)
            .await?
        else {
            return Ok(Checked::unauthorized(
                "the token is signed with a key the issuer does not publish",
            ));
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        if self.config.audience.is_empty() {
            validation.validate_aud = false;
            validation.set_required_spec_claims(&["exp", "iss"]);
        } else {
            validation.set_audience(&self.config.audience);
            validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        }
        let claims = match decode::<Value>(token, &key.decoding, &validation) {
            Ok(data) => data.claims,
            Err(error) => return Ok(Checked::unauthorized(refusal(error.kind()))),
        };
        let pointers = std::slice::from_ref(&self.config.user_id);
        let Ok(user_id) = answer::user_id(&claims, pointers, WHO) else {
            return Ok(Checked::unauthorized(format!(
                "the token has no usable user id at {}",
                self.config.user_id
            )));
        };
        // `exp` was checked above; with the leeway it is the end of the verdict's life.
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_f64)
            .and_then(|exp| answer::epoch(exp + self.config.leeway.as_secs_f64()));
        Ok(Checked::Valid {
            user_id,
            expires_at,
        })
    }
}

/// What the client is told about a token that failed verification.
fn refusal(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token expired".to_owned(),
        ErrorKind::ImmatureSignature => "token not valid yet (nbf)".to_owned(),
        ErrorKind::InvalidIssuer => "token from another issuer".to_owned(),
        ErrorKind::InvalidAudience => "token for another audience".to_owned(),
        ErrorKind::InvalidSignature => "bad token signature".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token has no `{claim}` claim"),
        ErrorKind::InvalidAlgorithm => "token algorithm does not fit its key".to_owned(),
        _ => "malformed token".to_owned(),
    }
}
