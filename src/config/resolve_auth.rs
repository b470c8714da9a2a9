//! Resolution of `[auth]`: the validator kind and the keys it needs (and only those), token
//! sources, and the identity header.

use std::net::IpAddr;
use std::ops::Range;
use std::str::FromStr;

use http::{HeaderName, Method, StatusCode, Uri};
use toml::Spanned;

use super::raw::RawAuth;
use super::resolve::Resolver;
use super::*;

/// The keys that belong to one validator kind, with the kinds that use them.
const KIND_KEYS: [(&str, &[&str]); 17] = [
    ("validate", &["http"]),
    ("method", &["http"]),
    ("send", &["http"]),
    ("valid_status", &["http"]),
    ("reject_status", &["http"]),
    ("valid", &["http"]),
    ("expires_at", &["http"]),
    ("user_id", &["http", "introspection", "jwt"]),
    ("introspect", &["introspection"]),
    ("client_id", &["introspection"]),
    ("client_secret", &["introspection"]),
    ("jwks_url", &["jwt"]),
    ("issuer", &["jwt"]),
    ("audience", &["jwt"]),
    ("algorithms", &["jwt"]),
    ("leeway_s", &["jwt"]),
    ("jwks_min_refresh_ms", &["jwt"]),
];

/// Headers that mean something to HTTP itself, and cannot name the validated user.
const RESERVED_IDENTITY_HEADERS: [&str; 8] = [
    "authorization",
    "cookie",
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "te",
    "upgrade",
];

/// The most clock skew `leeway_s` may forgive.
const MAX_LEEWAY_S: u64 = 300;

impl Resolver<'_> {
    pub(super) fn auth(&self, raw: &Spanned<RawAuth>) -> Result<AuthConfig, ConfigError> {
        let table = raw.span();
        let raw = raw.get_ref();
        let kind = raw.kind.get_ref().as_str();
        if !matches!(kind, "http" | "introspection" | "jwt") {
            return Err(self.error(
                raw.kind.span(),
                "auth.kind",
                format!(
                    "`{kind}` is not a validator kind; use \"http\", \"introspection\" or \"jwt\""
                ),
            ));
        }
        self.foreign_keys(raw, kind)?;
        let validator = match kind {
            "http" => ValidatorConfig::Http(self.http_validator(raw, &table)?),
            "introspection" => ValidatorConfig::Introspection(self.introspection(raw, &table)?),
            _ => ValidatorConfig::Jwt(self.jwt(raw, &table)?),
        };
        if raw.sources.is_empty() {
            return Err(self.error(
                table,
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
        let identity_header = self.identity_header(raw, &sources)?;
        Ok(AuthConfig {
            validator,
            sources,
            identity_header,
            cache_ttl: {
                self.positive(&raw.cache_ttl_s, "auth.cache_ttl_s")?;
                self.ttl(&raw.cache_ttl_s, "auth.cache_ttl_s")?
            },
            negative_ttl: self.ttl(&raw.negative_ttl_s, "auth.negative_ttl_s")?,
            cache_capacity: self.positive(&raw.cache_capacity, "auth.cache_capacity")?,
            max_validations_per_s: self
                .positive(&raw.max_validations_per_s, "auth.max_validations_per_s")?,
        })
    }

    /// A key of another validator kind is an error, not silently ignored.
    fn foreign_keys(&self, raw: &RawAuth, kind: &str) -> Result<(), ConfigError> {
        let spans: [Option<Range<usize>>; 17] = [
            raw.validate.as_ref().map(Spanned::span),
            raw.method.as_ref().map(Spanned::span),
            raw.send.as_ref().map(Spanned::span),
            raw.valid_status.as_ref().map(Spanned::span),
            raw.reject_status.as_ref().map(Spanned::span),
            raw.valid.as_ref().map(Spanned::span),
            raw.expires_at.as_ref().map(Spanned::span),
            raw.user_id.as_ref().map(Spanned::span),
            raw.introspect.as_ref().map(Spanned::span),
            raw.client_id.as_ref().map(Spanned::span),
            raw.client_secret.as_ref().map(Spanned::span),
            raw.jwks_url.as_ref().map(Spanned::span),
            raw.issuer.as_ref().map(Spanned::span),
            raw.audience.as_ref().map(Spanned::span),
            raw.algorithms.as_ref().map(Spanned::span),
            raw.leeway_s.as_ref().map(Spanned::span),
            raw.jwks_min_refresh_ms.as_ref().map(Spanned::span),
        ];
        for ((name, kinds), span) in KIND_KEYS.iter().zip(spans) {
            if let Some(span) = span.filter(|_| !kinds.contains(&kind)) {
                return Err(self.error(
                    span,
                    &format!("auth.{name}"),
                    format!("only `kind = \"{}\"` uses this key", kinds[0]),
                ));
            }
        }
        Ok(())
    }

    fn required<'v, T>(
        &self,
        value: &'v Option<Spanned<T>>,
        table: &Range<usize>,
        kind: &str,
        key: &str,
        example: &str,
    ) -> Result<&'v Spanned<T>, ConfigError> {
        value.as_ref().ok_or_else(|| {
            self.error(
                table.clone(),
                &format!("auth.{key}"),
                format!("`kind = \"{kind}\"` needs `{key}` ({example})"),
            )
        })
    }

    fn http_validator(
        &self,
        raw: &RawAuth,
        table: &Range<usize>,
    ) -> Result<HttpValidatorConfig, ConfigError> {
        let validate = self.required(
            &raw.validate,
            table,
            "http",
            "validate",
            "an origin path such as \"/auth/validate\", or an https URL",
        )?;
        let endpoint = self.endpoint(validate, "auth.validate")?;
        let method = match &raw.method {
            None => Method::GET,
            Some(m) => match m.get_ref().to_ascii_uppercase().as_str() {
                "GET" => Method::GET,
                "POST" => Method::POST,
                _ => {
                    return Err(self.error(m.span(), "auth.method", "use \"GET\" or \"POST\""));
                }
            },
        };
        let send = match &raw.send {
            None => TokenSource::Bearer,
            Some(s) => {
                parse_token_source(s.get_ref()).map_err(|m| self.error(s.span(), "auth.send", m))?
            }
        };
        let valid_status = self.statuses(&raw.valid_status, "auth.valid_status", &[200])?;
        let reject_status = self.statuses(&raw.reject_status, "auth.reject_status", &[401, 403])?;
        if let Some(both) = valid_status.iter().find(|s| reject_status.contains(s)) {
            let span = raw
                .reject_status
                .as_ref()
                .map_or(table.clone(), Spanned::span);
            return Err(self.error(
                span,
                "auth.reject_status",
                format!("{both} is also in `valid_status`; a status means one thing"),
            ));
        }
        Ok(HttpValidatorConfig {
            endpoint,
            method,
            send,
            valid_status,
            reject_status,
            valid: raw
                .valid
                .as_ref()
                .map(|v| self.pointer(v, "auth.valid"))
                .transpose()?,
            user_id: match &raw.user_id {
                Some(p) => self.pointer(p, "auth.user_id")?,
                None => "/user_id".to_owned(),
            },
            expires_at: match &raw.expires_at {
                Some(p) => self.pointer(p, "auth.expires_at")?,
                None => "/expires_at".to_owned(),
            },
        })
    }

    fn introspection(
        &self,
        raw: &RawAuth,
        table: &Range<usize>,
    ) -> Result<IntrospectionConfig, ConfigError> {
        let kind = "introspection";
        let introspect = self.required(
            &raw.introspect,
            table,
            kind,
            "introspect",
            "the RFC 7662 endpoint, such as \"https://idp.example.com/oauth2/introspect\"",
        )?;
        let client_id = self.required(
            &raw.client_id,
            table,
            kind,
            "client_id",
            "\"${INTROSPECTION_CLIENT_ID}\"",
        )?;
        let client_secret = self.required(
            &raw.client_secret,
            table,
            kind,
            "client_secret",
            "\"${INTROSPECTION_CLIENT_SECRET}\"",
        )?;
        let user_id = match &raw.user_id {
            Some(p) => vec![self.pointer(p, "auth.user_id")?],
            None => vec!["/sub".to_owned(), "/username".to_owned()],
        };
        Ok(IntrospectionConfig {
            endpoint: self.endpoint(introspect, "auth.introspect")?,
            client_id: Secret(self.non_empty(client_id, "auth.client_id")?),
            client_secret: Secret(self.non_empty(client_secret, "auth.client_secret")?),
            user_id,
        })
    }

    fn jwt(&self, raw: &RawAuth, table: &Range<usize>) -> Result<JwtConfig, ConfigError> {
        let jwks = self.required(
            &raw.jwks_url,
            table,
            "jwt",
            "jwks_url",
            "the issuer's key set, such as \"https://issuer.example.com/.well-known/jwks.json\"",
        )?;
        let jwks_url = match self.endpoint(jwks, "auth.jwks_url")? {
            Endpoint::Url(uri) => uri,
            Endpoint::Origin(_) => {
                return Err(self.error(
                    jwks.span(),
                    "auth.jwks_url",
                    "must be an absolute URL (the key set is usually on the issuer's host)",
                ));
            }
        };
        let issuer = self.required(
            &raw.issuer,
            table,
            "jwt",
            "issuer",
            "the `iss` of the tokens, such as \"https://issuer.example.com/\"",
        )?;
        let audience = match &raw.audience {
            None => Vec::new(),
            Some(list) => {
                if list.get_ref().is_empty() || list.get_ref().iter().any(String::is_empty) {
                    return Err(self.error(
                        list.span(),
                        "auth.audience",
                        "list the accepted `aud` values (non-empty), or leave the key out",
                    ));
                }
                list.get_ref().clone()
            }
        };
        let algorithms = self.algorithms(&raw.algorithms)?;
        let leeway_s = raw.leeway_s.as_ref().map_or(30, |l| *l.get_ref());
        if leeway_s > MAX_LEEWAY_S {
            let span = raw.leeway_s.as_ref().map_or(0..0, Spanned::span);
            return Err(self.error(
                span,
                "auth.leeway_s",
                format!("at most {MAX_LEEWAY_S}: a larger skew accepts expired tokens"),
            ));
        }
        let min_refresh = match &raw.jwks_min_refresh_ms {
            Some(v) => self.positive(v, "auth.jwks_min_refresh_ms")?,
            None => 30_000,
        };
        Ok(JwtConfig {
            jwks_url,
            issuer: self.non_empty(issuer, "auth.issuer")?,
            audience,
            algorithms,
            user_id: match &raw.user_id {
                Some(p) => self.pointer(p, "auth.user_id")?,
                None => "/sub".to_owned(),
            },
            leeway: Duration::from_secs(leeway_s),
            min_refresh: Duration::from_millis(min_refresh),
        })
    }

    fn algorithms(
        &self,
        raw: &Option<Spanned<Vec<String>>>,
    ) -> Result<Vec<jsonwebtoken::Algorithm>, ConfigError> {
        use jsonwebtoken::Algorithm;
        let Some(list) = raw else {
            return Ok(vec![Algorithm::RS256, Algorithm::ES256]);
        };
        let key = "auth.algorithms";
        if list.get_ref().is_empty() {
            return Err(self.error(list.span(), key, "list at least one, such as \"RS256\""));
        }
        let mut algorithms = Vec::with_capacity(list.get_ref().len());
        for name in list.get_ref() {
            let algorithm = Algorithm::from_str(name).map_err(|_| {
                self.error(
                    list.span(),
                    key,
                    format!(
                        "`{name}` is not accepted; use RS256, RS384, RS512, PS256, PS384, \
                         PS512, ES256, ES384 or EdDSA"
                    ),
                )
            })?;
            if matches!(
                algorithm,
                Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
            ) {
                return Err(self.error(
                    list.span(),
                    key,
                    format!(
                        "`{name}` needs a shared secret, and a JWKS publishes public keys: \
                         accepting it would let a public key sign tokens"
                    ),
                ));
            }
            algorithms.push(algorithm);
        }
        Ok(algorithms)
    }

    fn identity_header(
        &self,
        raw: &RawAuth,
        sources: &[TokenSource],
    ) -> Result<HeaderName, ConfigError> {
        let key = "auth.identity_header";
        let value = &raw.identity_header;
        let name = HeaderName::from_bytes(value.get_ref().as_bytes())
            .map_err(|_| self.error(value.span(), key, "is not a valid header name"))?;
        if RESERVED_IDENTITY_HEADERS.contains(&name.as_str()) {
            return Err(self.error(
                value.span(),
                key,
                format!("`{name}` means something to HTTP; use a header of its own such as \"x-edge-user\""),
            ));
        }
        if sources.contains(&TokenSource::Header(name.clone())) {
            return Err(self.error(
                value.span(),
                key,
                format!(
                    "`{name}` is also a token source: clients send it, so it cannot be the \
                     proxy's statement of who they are; pick another header"
                ),
            ));
        }
        Ok(name)
    }

    /// An origin path (`/...`) or an absolute URL; `https`, or `http` on loopback only, since
    /// tokens, client secrets and signing keys travel on it.
    fn endpoint(&self, value: &Spanned<String>, key: &str) -> Result<Endpoint, ConfigError> {
        let text = self.expand(value, key)?;
        let written = value.get_ref();
        if text.starts_with('/') {
            return match text.parse::<http::uri::PathAndQuery>() {
                Ok(_) => Ok(Endpoint::Origin(text)),
                Err(_) => Err(self.error(
                    value.span(),
                    key,
                    format!("`{written}` is not a valid path"),
                )),
            };
        }
        let bad = |why: &str| self.error(value.span(), key, format!("`{written}` {why}"));
        let uri: Uri = text
            .parse()
            .map_err(|_| bad("is neither an origin path starting with `/` nor a URL"))?;
        let host = uri.host().ok_or_else(|| bad("has no host"))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback(host) => {}
            Some("http") => {
                return Err(bad(
                    "must use https (http only on loopback): credentials and keys travel on it",
                ));
            }
            _ => return Err(bad("must be an http(s) URL")),
        }
        Ok(Endpoint::Url(uri))
    }

    /// A JSON pointer (RFC 6901), which starts with `/`.
    fn pointer(&self, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let text = value.get_ref();
        if text.starts_with('/') {
            Ok(text.clone())
        } else {
            Err(self.error(
                value.span(),
                key,
                format!("`{text}` is not a JSON pointer; write it as \"/{text}\""),
            ))
        }
    }

    fn non_empty(&self, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
        let text = self.expand(value, key)?;
        if text.is_empty() {
            return Err(self.error(value.span(), key, "must not be empty"));
        }
        Ok(text)
    }

    fn statuses(
        &self,
        value: &Option<Spanned<Vec<u16>>>,
        key: &str,
        default: &[u16],
    ) -> Result<Vec<StatusCode>, ConfigError> {
        let Some(list) = value else {
            return Ok(default
                .iter()
                .filter_map(|&s| StatusCode::from_u16(s).ok())
                .collect());
        };
        if list.get_ref().is_empty() {
            return Err(self.error(list.span(), key, "list at least one status"));
        }
        list.get_ref()
            .iter()
            .map(|&code| {
                StatusCode::from_u16(code)
                    .ok()
                    .filter(|_| (100..600).contains(&code))
                    .ok_or_else(|| {
                        self.error(list.span(), key, format!("{code} is not an HTTP status"))
                    })
            })
            .collect()
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

pub(super) fn parse_token_source(text: &str) -> Result<TokenSource, String> {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const BASE: &str = r#"
[listen]
http = "127.0.0.1:0"

[upstream]
url = "http://127.0.0.1:9000"

[auth]
"#;

    fn parse(auth: &str) -> Result<Config, ConfigError> {
        let env = |name: &str| (name == "SECRET").then(|| "s3cret".to_owned());
        Config::from_toml(&format!("{BASE}{auth}"), "proxy.toml", Path::new("."), &env)
    }

    fn auth(text: &str) -> AuthConfig {
        parse(text).expect("valid").auth.expect("[auth]")
    }

    /// The key and message of an invalid `[auth]`, and its line within it (1 = first).
    fn invalid(text: &str) -> (usize, String, String) {
        let (line, key, message) = crate::config::testing::invalid_parts(parse(text));
        (line - BASE.lines().count(), key, message)
    }

    #[test]
    fn todays_contract_is_the_default() {
        let config = auth("validate = \"/auth/validate\"\n");
        let ValidatorConfig::Http(http) = config.validator else {
            panic!("http kind")
        };
        assert_eq!(http.endpoint, Endpoint::Origin("/auth/validate".into()));
        assert_eq!((http.method, http.send), (Method::GET, TokenSource::Bearer));
        assert_eq!(http.valid_status, [StatusCode::OK]);
        assert_eq!(
            http.reject_status,
            [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN]
        );
        assert_eq!(
            (http.valid, http.user_id.as_str(), http.expires_at.as_str()),
            (None, "/user_id", "/expires_at")
        );
        assert_eq!(config.identity_header, "x-edge-user");
        assert_eq!(config.sources, [TokenSource::Bearer]);
    }

    #[test]
    fn the_dashboard_shape_resolves() {
        let config = auth(
            "validate = \"/api/v2/auth/validate\"\nsend = \"x-user-id\"\nvalid = \"/valid\"\n\
             sources = [\"x-user-id\"]\n",
        );
        let ValidatorConfig::Http(http) = config.validator else {
            panic!("http kind")
        };
        assert_eq!(
            http.send,
            TokenSource::Header(HeaderName::from_static("x-user-id"))
        );
        assert_eq!(http.valid.as_deref(), Some("/valid"));
    }

    #[test]
    fn kinds_need_their_keys_and_refuse_the_others() {
        let (_, key, message) = invalid("kind = \"http\"\n");
        assert_eq!(key, "auth.validate");
        assert!(message.contains("needs `validate`"), "{message}");
        let (line, key, message) = invalid("kind = \"jwt\"\nvalidate = \"/v\"\n");
        assert_eq!((line, key.as_str()), (2, "auth.validate"));
        assert!(message.contains("kind = \"http\""), "{message}");
        let (_, key, _) =
            invalid("kind = \"introspection\"\nintrospect = \"/i\"\nclient_id = \"a\"\n");
        assert_eq!(key, "auth.client_secret");
        let (line, key, message) = invalid("kind = \"oauth\"\n");
        assert_eq!((line, key.as_str()), (1, "auth.kind"));
        assert!(message.contains("\"jwt\""), "{message}");
    }

    #[test]
    fn introspection_takes_its_secret_from_the_environment_and_never_prints_it() {
        let config = auth(
            "kind = \"introspection\"\nintrospect = \"https://idp.example.com/introspect\"\n\
             client_id = \"edge\"\nclient_secret = \"${SECRET}\"\n",
        );
        let ValidatorConfig::Introspection(i) = &config.validator else {
            panic!("introspection kind")
        };
        assert_eq!(i.client_secret.0, "s3cret");
        assert_eq!(i.user_id, ["/sub", "/username"]);
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn endpoints_are_origin_paths_or_https_urls() {
        let (line, key, message) = invalid("validate = \"http://auth.example.com/v\"\n");
        assert_eq!((line, key.as_str()), (1, "auth.validate"));
        assert!(message.contains("https"), "{message}");
        for fine in [
            "https://auth.example.com/v",
            "http://127.0.0.1:9/v",
            "http://localhost/v",
        ] {
            auth(&format!("validate = \"{fine}\"\n"));
        }
        let (_, _, message) = invalid("validate = \"auth/validate\"\n");
        assert!(message.contains("starting with `/`"), "{message}");
    }

    #[test]
    fn jwt_defaults_and_algorithm_rules() {
        let jwt = "kind = \"jwt\"\njwks_url = \"https://i.example.com/jwks.json\"\nissuer = \"https://i.example.com/\"\n";
        let ValidatorConfig::Jwt(config) = auth(jwt).validator else {
            panic!("jwt kind")
        };
        use jsonwebtoken::Algorithm;
        assert_eq!(config.algorithms, [Algorithm::RS256, Algorithm::ES256]);
        assert_eq!(config.user_id, "/sub");
        assert!(config.audience.is_empty());
        assert_eq!(config.leeway, Duration::from_secs(30));
        for refused in ["HS256", "none", "RSA"] {
            let (line, key, _) = invalid(&format!("{jwt}algorithms = [\"{refused}\"]\n"));
            assert_eq!((line, key.as_str()), (4, "auth.algorithms"), "{refused}");
        }
        let (_, key, message) =
            invalid(&jwt.replace("https://i.example.com/jwks.json", "/jwks.json"));
        assert_eq!(key, "auth.jwks_url");
        assert!(message.contains("absolute"), "{message}");
        let (_, key, _) = invalid(&format!("{jwt}leeway_s = 3600\n"));
        assert_eq!(key, "auth.leeway_s");
        let (_, key, _) = invalid(&jwt.replace("issuer = \"https://i.example.com/\"\n", ""));
        assert_eq!(key, "auth.issuer");
    }

    #[test]
    fn the_identity_header_is_never_a_token_source() {
        let (line, key, message) = invalid(
            "validate = \"/v\"\nsources = [\"x-user-id\"]\nidentity_header = \"x-user-id\"\n",
        );
        assert_eq!((line, key.as_str()), (3, "auth.identity_header"));
        assert!(message.contains("token source"), "{message}");
        let (_, key, _) = invalid("validate = \"/v\"\nidentity_header = \"authorization\"\n");
        assert_eq!(key, "auth.identity_header");
        let config = auth("validate = \"/v\"\nidentity_header = \"X-User-ID\"\n");
        assert_eq!(config.identity_header, "x-user-id");
    }

    #[test]
    fn status_lists_are_checked() {
        let (_, key, _) =
            invalid("validate = \"/v\"\nvalid_status = [200]\nreject_status = [200]\n");
        assert_eq!(key, "auth.reject_status");
        let (_, key, _) = invalid("validate = \"/v\"\nvalid_status = [99]\n");
        assert_eq!(key, "auth.valid_status");
        let (_, key, _) = invalid("validate = \"/v\"\nuser_id = \"user_id\"\n");
        assert_eq!(key, "auth.user_id");
    }
}
