//! `kind = "introspection"`: RFC 7662 token introspection.
//!
//! `POST` with the form `token=...&token_type_hint=access_token`, the proxy's client
//! credentials in `Authorization: Basic` (RFC 6749 §2.3.1). A 200 with `"active": false` is a
//! rejection; `"active": true` gives the user (`sub`, then `username`, or the configured
//! pointer) and `exp`. Any other status, or an answer without a boolean `active`, is a
//! failure: the client gets 503 and nothing is cached.

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri, header};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::answer::{self, Checked};
use crate::config::{Endpoint, IntrospectionConfig};
use crate::origin::{ClientBody, Fetched, Upstream};

/// How the endpoint is named in failures.
const WHO: &str = "the introspection endpoint";

/// Asks the authorization server about each token.
pub(super) struct Introspector {
    /// Where the endpoint is, and which pointers name the user.
    config: IntrospectionConfig,
    /// `Basic <base64(id:secret)>`, built once.
    client_auth: HeaderValue,
}

impl Introspector {
    /// Fails only when the credentials cannot form a header (they are checked at startup).
    pub(super) fn new(config: IntrospectionConfig) -> Result<Introspector, String> {
        let form = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let pair = format!(
            "{}:{}",
            form(&config.client_id.0),
            form(&config.client_secret.0)
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        let mut client_auth = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| "client credentials cannot form a header".to_owned())?;
        client_auth.set_sensitive(true);
        Ok(Introspector {
            config,
            client_auth,
        })
    }

    /// One introspection call. `Err` means "could not tell".
    pub(super) async fn check(&self, token: &str, upstream: &Upstream) -> Result<Checked, String> {
        let uri: Uri = match &self.config.endpoint {
            Endpoint::Origin(path) => upstream.uri(path).map_err(|e| e.to_string())?,
            Endpoint::Url(uri) => uri.clone(),
        };
        let form = format!(
            "token={}&token_type_hint=access_token",
            utf8_percent_encode(token, NON_ALPHANUMERIC)
        );
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, self.client_auth.clone());
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let mut request = Request::new(ClientBody::Full(Some(Bytes::from(form))));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        let fetched = upstream
            .exchange(request)
            .await
            .map_err(|e| e.to_string())?;
        self.judge(&fetched)
    }

    fn judge(&self, fetched: &Fetched) -> Result<Checked, String> {
        if fetched.status != StatusCode::OK {
            return Err(format!("{WHO} answered {}", fetched.status));
        }
        let body = answer::json(&fetched.body, WHO)?;
        match body.get("active") {
            Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => {
                return Ok(Checked::unauthorized("the token is not active"));
            }
            _ => return Err(format!("{WHO}'s answer has no boolean `active`")),
        }
        Ok(Checked::Valid {
            user_id: answer::user_id(&body, &self.config.user_id, WHO)?,
            expires_at: answer::expiry(&body, "/exp", WHO)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn introspector() -> Introspector {
        Introspector::new(IntrospectionConfig {
            endpoint: Endpoint::Origin("/introspect".into()),
            client_id: Secret("edge proxy".into()),
            client_secret: Secret("s3cr:t".into()),
            user_id: vec!["/sub".into(), "/username".into()],
        })
        .expect("introspector")
    }

    #[test]
    fn client_credentials_are_form_encoded_then_base64() {
        let expected = base64::engine::general_purpose::STANDARD.encode("edge%20proxy:s3cr%3At");
        assert_eq!(
            introspector().client_auth.to_str().expect("ascii"),
            format!("Basic {expected}")
        );
    }

    #[test]
    fn active_decides_and_anything_else_fails() {
        let i = introspector();
        assert_eq!(
            i.judge(&Fetched::for_tests(200, r#"{"active": false}"#)),
            Ok(Checked::unauthorized("the token is not active"))
        );
        assert!(matches!(
            i.judge(&Fetched::for_tests(
                200,
                r#"{"active": true, "username": "ann", "exp": 4102444800}"#
            )),
            Ok(Checked::Valid { user_id, expires_at: Some(_) }) if user_id == "ann"
        ));
        for broken in [
            r#"{"active": "true", "sub": "a"}"#,
            r#"{"sub": "a"}"#,
            r#"{"active": true}"#,
            r#"{"active": true, "sub": "a", "exp": "later"}"#,
            "not json",
        ] {
            assert!(
                i.judge(&Fetched::for_tests(200, broken)).is_err(),
                "{broken}"
            );
        }
        assert!(
            i.judge(&Fetched::for_tests(401, r#"{"error": "invalid_client"}"#))
                .is_err()
        );
    }
}
