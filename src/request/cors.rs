//! CORS on stream routes (`[cors]`): which pages on other origins may read an event stream,
//! and the answer to their preflight.
//!
//! `EventSource` sends a simple cross-origin GET (no preflight) and reads the answer only
//! when it carries `Access-Control-Allow-Origin` for the page's origin; a `fetch`-based SSE
//! client that sets `Authorization` preflights with `OPTIONS` first. Every stream-route
//! answer (events, refusals and errors alike) gets the headers, so a page can tell a refusal
//! from a network failure. The allowed origin is echoed only when it is in the list; `*`
//! is never combined with credentials (the config refuses it), and every answer carries
//! `Vary: Origin` so a cache never serves one origin's answer to another. Passthrough
//! answers are the origin's own, CORS headers included.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, request};

use super::body::ProxyBody;
use super::error::ProxyError;
use crate::config::{AllowOrigins, CorsConfig};

/// The `[cors]` policy, with its header values built once.
pub struct Cors {
    /// Which origins, and whether with credentials.
    config: CorsConfig,
    /// `Access-Control-Expose-Headers`, if any are exposed.
    expose: Option<HeaderValue>,
    /// `Access-Control-Allow-Headers` for preflights.
    allow_headers: Option<HeaderValue>,
    /// `Access-Control-Max-Age` for preflights.
    max_age: HeaderValue,
}

impl Cors {
    /// The policy for `config`.
    pub fn new(config: CorsConfig) -> Cors {
        let join = |names: &[HeaderName]| {
            let text = names
                .iter()
                .map(HeaderName::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            // Header names are valid header-value characters, so this cannot fail.
            (!text.is_empty())
                .then(|| HeaderValue::from_str(&text).ok())
                .flatten()
        };
        Cors {
            expose: join(&config.expose_headers),
            allow_headers: join(&config.allow_headers),
            max_age: HeaderValue::from(config.max_age.as_secs()),
            config,
        }
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
    fn allowed(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.config.allow_origins {
            AllowOrigins::Any => Some(HeaderValue::from_static("*")),
            AllowOrigins::List(list) => {
                let origin = origin?;
                let text = origin.to_str().ok()?;
                list.iter()
                    .any(|allowed| allowed.eq_ignore_ascii_case(text))
                    .then(|| origin.clone())
            }
        }
    }

    /// Adds the CORS headers of a stream-route answer for a request from `origin`.
    pub fn apply(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.append(header::VARY, HeaderValue::from_static("origin"));
        let Some(allow) = self.allowed(origin) else {
            return;
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        if self.config.allow_credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    /// Answers an `OPTIONS` request on a stream route: a preflight from an allowed origin
    /// asking for `GET` gets 204 with what it may send; one from anywhere else is refused
    /// (403); a plain `OPTIONS` learns the allowed methods. [`Cors::apply`] adds the rest.
    pub fn preflight(&self, parts: &request::Parts) -> Result<Response<ProxyBody>, ProxyError> {
        let mut response = Response::new(ProxyBody::full(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let asked = parts.headers.get(header::ACCESS_CONTROL_REQUEST_METHOD);
        let Some(asked) = asked else {
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, OPTIONS"));
            return Ok(response);
        };
        let origin = parts.headers.get(header::ORIGIN);
        if self.allowed(origin).is_none() {
            return Err(ProxyError::CorsRefused(
                "this origin may not read streams here ([cors] allow_origins)".to_owned(),
            ));
        }
        if asked.as_bytes() != Method::GET.as_str().as_bytes() {
            return Err(ProxyError::CorsRefused(
                "stream routes answer GET only".to_owned(),
            ));
        }
        let headers = response.headers_mut();
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET"),
        );
        if let Some(allow) = &self.allow_headers {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow.clone());
        }
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        headers.append(
            header::VARY,
            HeaderValue::from_static(
                "access-control-request-method, access-control-request-headers",
            ),
        );
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn cors(origins: AllowOrigins, credentials: bool) -> Cors {
        Cors::new(CorsConfig {
            allow_origins: origins,
            allow_credentials: credentials,
            expose_headers: vec![HeaderName::from_static("x-request-id")],
            allow_headers: vec![header::AUTHORIZATION],
            max_age: Duration::from_secs(60),
        })
    }

    fn applied(cors: &Cors, origin: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let origin = origin.map(HeaderValue::from_static);
        cors.apply(origin.as_ref(), &mut headers);
        headers
    }

    #[test]
    fn only_listed_origins_are_echoed() {
        let c = cors(AllowOrigins::List(vec!["https://app.example".into()]), true);
        let ok = applied(&c, Some("https://APP.example"));
        assert_eq!(
            ok[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://APP.example"
        );
        assert_eq!(ok[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(ok[header::ACCESS_CONTROL_EXPOSE_HEADERS], "x-request-id");
        assert_eq!(ok[header::VARY], "origin");
        for other in [Some("https://evil.example"), Some("null"), None] {
            let no = applied(&c, other);
            assert!(
                no.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(),
                "{other:?}"
            );
            assert!(no.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
            assert_eq!(no[header::VARY], "origin");
        }
    }

    #[test]
    fn any_origin_is_a_star_without_credentials() {
        let c = cors(AllowOrigins::Any, false);
        let headers = applied(&c, Some("https://any.example"));
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(
            headers
                .get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
                .is_none()
        );
    }
}
