//! The issuer's public keys (a JWKS), fetched through the origin client, kept in memory, and
//! fetched again when a token names a key id we do not know: at most once per
//! `jwks_min_refresh_ms`, so made-up `kid`s cannot make the proxy hammer the issuer.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, StatusCode, Uri, header};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::origin::{ClientBody, Upstream};

/// Most keys kept from one key set; issuers publish a handful.
const MAX_KEYS: usize = 64;

/// One usable public key.
#[derive(Clone)]
pub(super) struct Key {
    /// `kid`, when the set names its keys.
    kid: Option<String>,
    /// Which algorithms this key can verify (from `kty`/`crv`, narrowed by `alg`).
    shape: Shape,
    /// `alg`, when the set pins the key to one algorithm.
    alg: Option<Algorithm>,
    /// The key, ready for `jsonwebtoken`.
    pub(super) decoding: DecodingKey,
}

/// The kind of key, which decides the algorithms it may verify (no family confusion).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shape {
    /// `kty = "RSA"`: RS* and PS*.
    Rsa,
    /// `kty = "EC"`, `crv = "P-256"`: ES256.
    P256,
    /// `kty = "EC"`, `crv = "P-384"`: ES384.
    P384,
    /// `kty = "OKP"`, `crv = "Ed25519"`: EdDSA.
    Ed25519,
}

impl Key {
    /// Whether this key may verify a token signed with `alg`.
    pub(super) fn fits(&self, alg: Algorithm) -> bool {
        let shape_fits = match self.shape {
            Shape::Rsa => matches!(
                alg,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            Shape::P256 => alg == Algorithm::ES256,
            Shape::P384 => alg == Algorithm::ES384,
            Shape::Ed25519 => alg == Algorithm::EdDSA,
        };
        shape_fits && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

/// The last fetch: when, and whether it worked.
#[derive(Clone, Copy)]
struct Attempt {
    /// When it finished: the refresh window starts there.
    at: Instant,
    /// Whether it worked: within the window, a failure stays a failure (503), a success
    /// means an unknown `kid` really is unknown (401).
    ok: bool,
}

/// The key set of one issuer.
pub(super) struct Jwks {
    /// Where it is published.
    url: Uri,
    /// Least time between two fetches.
    min_refresh: Duration,
    /// The keys of the last good fetch.
    keys: RwLock<Arc<Vec<Key>>>,
    /// The last fetch; the lock also makes concurrent refreshes wait for one fetch.
    last: tokio::sync::Mutex<Option<Attempt>>,
}

impl Jwks {
    pub(super) fn new(url: Uri, min_refresh: Duration) -> Jwks {
        Jwks {
            url,
            min_refresh,
            keys: RwLock::default(),
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The key for `kid` that fits `alg`, fetching the set when it is not known yet.
    /// `Ok(None)`: no such key (even after a refresh, or a refresh was too recent).
    /// `Err`: the set could not be fetched, so nothing can be said.
    pub(super) async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        upstream: &Upstream,
    ) -> Result<Option<Key>, String> {
        if let Some(key) = self.find(kid, alg) {
            return Ok(Some(key));
        }
        let mut last = self.last.lock().await;
        // Someone else may have refreshed while we waited.
        if let Some(key) = self.find(kid, alg) {
            return Ok(Some(key));
        }
        if let Some(attempt) = *last
            && attempt.at.elapsed() < self.min_refresh
        {
            return if attempt.ok {
                Ok(None)
            } else {
                Err("the issuer's key set could not be fetched; try again shortly".to_owned())
            };
        }
        let fetched = self.fetch(upstream).await;
        *last = Some(Attempt {
            at: Instant::now(),
            ok: fetched.is_ok(),
        });
        let keys = fetched?;
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(self.find(kid, alg))
    }

    /// A known key: by `kid`, or the only fitting key when the token names none.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<Key> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner()).clone();
        match kid {
            Some(kid) => keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.fits(alg))
                .cloned(),
            None => {
                let mut fitting = keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            }
        }
    }

    async fn fetch(&self, upstream: &Upstream) -> Result<Vec<Key>, String> {
        let mut request = Request::new(ClientBody::Empty);
        *request.uri_mut() = self.url.clone();
        request
            .headers_mut()
            .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let fetched = upstream
            .exchange(request)
            .await
            .map_err(|e| format!("the issuer's key set: {e}"))?;
        if fetched.status != StatusCode::OK {
            return Err(format!("the issuer's key set answered {}", fetched.status));
        }
        let set: Value = serde_json::from_slice(&fetched.body)
            .map_err(|e| format!("the issuer's key set is not JSON: {e}"))?;
        let listed = set
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("the issuer's key set has no `keys` array")?;
        let keys: Vec<Key> = listed.iter().filter_map(parse_key).take(MAX_KEYS).collect();
        if keys.is_empty() {
            return Err("the issuer's key set has no usable signing key".to_owned());
        }
        tracing::info!(keys = keys.len(), "fetched the issuer's key set");
        Ok(keys)
    }
}

/// One JWK, if it is a public signing key we can use; symmetric (`oct`) keys, encryption
/// keys and unknown shapes are skipped.
fn parse_key(jwk: &Value) -> Option<Key> {
    let text = |name: &str| jwk.get(name).and_then(Value::as_str);
    if text("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let (shape, decoding) = match (text("kty")?, text("crv")) {
        ("RSA", _) => (
            Shape::Rsa,
            DecodingKey::from_rsa_components(text("n")?, text("e")?).ok()?,
        ),
        ("EC", Some(crv)) => {
            let shape = match crv {
                "P-256" => Shape::P256,
                "P-384" => Shape::P384,
                _ => return None,
            };
            (
                shape,
                DecodingKey::from_ec_components(text("x")?, text("y")?).ok()?,
            )
        }
        ("OKP", Some("Ed25519")) => (
            Shape::Ed25519,
            DecodingKey::from_ed_components(text("x")?).ok()?,
        ),
        _ => return None,
    };
    let alg = match text("alg") {
        None => None,
        Some(name) => Some(name.parse::<Algorithm>().ok()?),
    };
    Some(Key {
        kid: text("kid").map(str::to_owned),
        shape,
        alg,
        decoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_public_signing_keys_are_kept_and_each_fits_its_algorithms() {
        let ec = json!({"kty": "EC", "crv": "P-256", "kid": "a", "x": "AQ", "y": "AQ"});
        let key = parse_key(&ec).expect("EC key");
        assert!(key.fits(Algorithm::ES256));
        assert!(!key.fits(Algorithm::ES384));
        assert!(!key.fits(Algorithm::RS256));
        assert!(!key.fits(Algorithm::HS256));
        let rsa = json!({"kty": "RSA", "alg": "RS256", "n": "AQAB", "e": "AQAB"});
        let key = parse_key(&rsa).expect("RSA key");
        assert!(key.fits(Algorithm::RS256));
        assert!(!key.fits(Algorithm::PS256), "pinned by alg");
        for skipped in [
            json!({"kty": "oct", "k": "c2VjcmV0"}),
            json!({"kty": "EC", "crv": "P-256", "use": "enc", "x": "AQ", "y": "AQ"}),
            json!({"kty": "EC", "crv": "secp256k1", "x": "AQ", "y": "AQ"}),
            json!({"kty": "RSA", "alg": "none", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "RSA"}),
            json!("not an object"),
        ] {
            assert!(parse_key(&skipped).is_none(), "{skipped}");
        }
    }
}
