//! `kind = "http"`: an HTTP endpoint answers for each token, in whatever shape it already has.
//!
//! The token is sent the configured way (bearer, a header, a query parameter or a cookie).
//! A `reject_status` answer rejects it; a `valid_status` answer is read: the optional `valid`
//! pointer must be `true` (`false` is a rejection, not a failure), then the user id and the
//! expiry are read at their pointers. Anything else is a validator failure (503, not cached).

use http::{HeaderMap, HeaderValue, Request, StatusCode, Uri, header};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

use super::answer::{self, Checked};
use crate::config::{Endpoint, HttpValidatorConfig, TokenSource};
use crate::origin::{ClientBody, Fetched, Upstream};

/// How the validator is named in failures.
const WHO: &str = "the validator";

/// Calls the configured validator endpoint.
pub(super) struct HttpVerifier {
    /// `[auth]` keys of `kind = "http"`.
    config: HttpValidatorConfig,
}

impl HttpVerifier {
    pub(super) fn new(config: HttpValidatorConfig) -> HttpVerifier {
        HttpVerifier { config }
    }

    /// One validator call. `Err` means "could not tell".
    pub(super) async fn check(&self, token: &str, upstream: &Upstream) -> Result<Checked, String> {
        let request = self.request(token, upstream)?;
        let fetched = upstream
            .exchange(request)
            .await
            .map_err(|e| e.to_string())?;
        self.judge(&fetched)
    }

    fn request(&self, token: &str, upstream: &Upstream) -> Result<Request<ClientBody>, String> {
        let mut target = match &self.config.endpoint {
            Endpoint::Origin(path) => upstream.uri(path).map_err(|e| e.to_string())?.to_string(),
            Endpoint::Url(uri) => uri.to_string(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let value = |text: String| {
            HeaderValue::from_str(&text).map_err(|_| "token cannot be sent as a header".to_owned())
        };
        match &self.config.send {
            TokenSource::Bearer => {
                headers.insert(header::AUTHORIZATION, value(format!("Bearer {token}"))?);
            }
            TokenSource::Header(name) => {
                headers.insert(name.clone(), value(token.to_owned())?);
            }
            TokenSource::Cookie(name) => {
                headers.insert(header::COOKIE, value(format!("{name}={token}"))?);
            }
            TokenSource::Query(name) => {
                let separator = if target.contains('?') { '&' } else { '?' };
                let encoded = utf8_percent_encode(token, NON_ALPHANUMERIC);
                target = format!("{target}{separator}{name}={encoded}");
            }
        }
        let uri: Uri = target
            .parse()
            .map_err(|_| "cannot build the validator's URL".to_owned())?;
        let mut request = Request::new(ClientBody::Empty);
        *request.method_mut() = self.config.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// Reads the validator's answer.
    fn judge(&self, fetched: &Fetched) -> Result<Checked, String> {
        let status = fetched.status;
        if self.config.reject_status.contains(&status) {
            let detail = answer::json(&fetched.body, WHO)
                .ok()
                .as_ref()
                .and_then(answer::reason)
                .unwrap_or_else(|| "invalid or expired token".to_owned());
            let status = if status == StatusCode::FORBIDDEN {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            return Ok(Checked::Rejected { status, detail });
        }
        if !self.config.valid_status.contains(&status) {
            return Err(format!("{WHO} answered {status}"));
        }
        let body = answer::json(&fetched.body, WHO)?;
        if let Some(pointer) = &self.config.valid {
            match body.pointer(pointer) {
                Some(Value::Bool(true)) => {}
                Some(Value::Bool(false)) => {
                    let detail = answer::reason(&body)
                        .unwrap_or_else(|| "the validator says the token is not valid".to_owned());
                    return Ok(Checked::unauthorized(detail));
                }
                _ => return Err(format!("{WHO}'s answer has no true or false at {pointer}")),
            }
        }
        let user_id = answer::user_id(&body, std::slice::from_ref(&self.config.user_id), WHO)?;
        let expires_at = answer::expiry(&body, &self.config.expires_at, WHO)?;
        Ok(Checked::Valid {
            user_id,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn verifier(valid: Option<&str>) -> HttpVerifier {
        HttpVerifier::new(HttpValidatorConfig {
            endpoint: Endpoint::Origin("/v".into()),
            method: Method::GET,
            send: TokenSource::Bearer,
            valid_status: vec![StatusCode::OK],
            reject_status: vec![StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN],
            valid: valid.map(str::to_owned),
            user_id: "/user_id".into(),
            expires_at: "/expires_at".into(),
        })
    }

    #[test]
    fn valid_false_is_a_rejection_and_garbage_is_a_failure() {
        let v = verifier(Some("/valid"));
        assert_eq!(
            v.judge(&Fetched::for_tests(
                200,
                r#"{"valid": false, "message": "Session expired"}"#
            )),
            Ok(Checked::unauthorized("Session expired"))
        );
        assert!(matches!(
            v.judge(&Fetched::for_tests(
                200,
                r#"{"valid": true, "user_id": "u1", "expires_at": null}"#
            )),
            Ok(Checked::Valid { user_id, expires_at: None }) if user_id == "u1"
        ));
        for broken in [
            r#"{"valid": "yes", "user_id": "u1"}"#,
            r#"{"user_id": "u1"}"#,
            r#"{"valid": true}"#,
            r#"{"valid": true, "user_id": "u1", "expires_at": "soon"}"#,
            "<html>",
            "",
        ] {
            assert!(
                v.judge(&Fetched::for_tests(200, broken)).is_err(),
                "{broken}"
            );
        }
        for status in [500, 502, 404, 302, 429] {
            assert!(
                v.judge(&Fetched::for_tests(status, "{}")).is_err(),
                "{status}"
            );
        }
        assert_eq!(
            v.judge(&Fetched::for_tests(403, r#"{"detail": "banned"}"#)),
            Ok(Checked::Rejected {
                status: StatusCode::FORBIDDEN,
                detail: "banned".into()
            })
        );
    }
}
