//! `[auth]` as the rest of the crate sees it: where tokens come from, which validator judges
//! them, how verdicts are cached, and which header names the validated user on polls.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, Method, StatusCode, Uri};

/// `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Who judges a token: the origin's endpoint, an RFC 7662 introspection endpoint, or local
    /// JWT verification.
    pub validator: ValidatorConfig,
    /// Where a token may come from, tried in order.
    pub sources: Vec<TokenSource>,
    /// The header that carries the validated user id on polls; a client-sent copy is removed
    /// on every route, so only the proxy can make that statement.
    pub identity_header: HeaderName,
    /// How long a valid token is trusted without asking again (shortened by its expiry).
    pub cache_ttl: Duration,
    /// How long a rejected token is answered from memory.
    pub negative_ttl: Duration,
    /// Most tokens remembered at once; the cache evicts beyond it.
    pub cache_capacity: u64,
    /// Most validator calls per second (with an equal burst); beyond it new tokens get 503.
    pub max_validations_per_s: u64,
}

/// `[auth] kind` and its keys.
#[derive(Debug, Clone)]
pub enum ValidatorConfig {
    /// `kind = "http"`: an HTTP endpoint that answers for each token.
    Http(HttpValidatorConfig),
    /// `kind = "introspection"`: RFC 7662 token introspection.
    Introspection(IntrospectionConfig),
    /// `kind = "jwt"`: JWTs verified locally against a JWKS.
    Jwt(JwtConfig),
}

/// `kind = "http"`: the validator contract, generalised so an existing endpoint fits as is.
#[derive(Debug, Clone)]
pub struct HttpValidatorConfig {
    /// `validate`: where the validator is.
    pub endpoint: Endpoint,
    /// `method`: GET or POST (with an empty body).
    pub method: Method,
    /// `send`: how the token travels to the validator.
    pub send: TokenSource,
    /// `valid_status`: answers with these statuses are read as verdicts (the body decides).
    pub valid_status: Vec<StatusCode>,
    /// `reject_status`: answers with these statuses reject the token.
    pub reject_status: Vec<StatusCode>,
    /// `valid`: a JSON pointer that must be `true` for a valid token (`false`: rejected).
    pub valid: Option<String>,
    /// `user_id`: JSON pointer to the user id (a string or a number).
    pub user_id: String,
    /// `expires_at`: JSON pointer to the token's expiry (RFC 3339 or epoch seconds); absent
    /// or null in an answer means no expiry is known.
    pub expires_at: String,
}

/// `kind = "introspection"` (RFC 7662).
#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    /// `introspect`: the introspection endpoint.
    pub endpoint: Endpoint,
    /// `client_id`: the proxy's client id at the authorization server.
    pub client_id: Secret,
    /// `client_secret`: its secret (from `${ENV}`).
    pub client_secret: Secret,
    /// `user_id`: JSON pointers tried in order for the user id.
    pub user_id: Vec<String>,
}

/// `kind = "jwt"`: local verification, no call per token.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `jwks_url`: where the issuer publishes its public keys.
    pub jwks_url: Uri,
    /// `issuer`: the `iss` every token must carry.
    pub issuer: String,
    /// `audience`: accepted `aud` values; empty means `aud` is not checked.
    pub audience: Vec<String>,
    /// `algorithms`: the asymmetric algorithms accepted (never `none`, never HMAC).
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// `user_id`: JSON pointer into the claims for the user id.
    pub user_id: String,
    /// `leeway_s`: clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// `jwks_min_refresh_ms`: least time between two JWKS fetches caused by unknown key ids,
    /// so tokens with made-up `kid`s cannot make the proxy hammer the issuer.
    pub min_refresh: Duration,
}

/// Where a validator lives: a path on the origin, or an absolute URL elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A path (and query) on `[upstream]`.
    Origin(String),
    /// An absolute `https` URL (or `http` on loopback).
    Url(Uri),
}

/// A value that must never be printed (a client secret).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// One place a token may be found in a request (or be sent to a validator).
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
