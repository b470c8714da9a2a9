//! Where a client's token is found, and the one credential forwarded on its behalf.

use http::{HeaderMap, HeaderName, HeaderValue, header};

use super::AuthError;
use crate::config::TokenSource;
use crate::http::query::query_param;

/// The first token found in `sources` order, with the source it came from.
pub(super) fn find_token<'a, 's>(
    sources: &'s [TokenSource],
    headers: &'a HeaderMap,
    query: Option<&'a str>,
) -> Option<(&'s TokenSource, &'a str)> {
    sources.iter().find_map(|source| {
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
        Some((source, token))
    })
}

/// The validated credential as polls carry it: a header token as it came, a bearer token or
/// a cookie on its own (never another credential the client also sent). A query token, which
/// a poll cannot carry in its URL, goes the way `query_as` says (the way the origin's own
/// validator reads tokens), and as `Authorization: Bearer` when that is a query too.
pub(super) fn credential(
    source: &TokenSource,
    token: &str,
    query_as: &TokenSource,
) -> Result<(HeaderName, HeaderValue), AuthError> {
    let source = match (source, query_as) {
        (TokenSource::Query(_), TokenSource::Query(_)) => &TokenSource::Bearer,
        (TokenSource::Query(_), other) => other,
        (source, _) => source,
    };
    let (name, value) = match source {
        TokenSource::Header(name) => (name.clone(), token.to_owned()),
        TokenSource::Cookie(name) => (header::COOKIE, format!("{name}={token}")),
        TokenSource::Bearer | TokenSource::Query(_) => {
            (header::AUTHORIZATION, format!("Bearer {token}"))
        }
    };
    let value = HeaderValue::from_str(&value).map_err(|_| AuthError::Unforwardable)?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> Vec<TokenSource> {
        vec![
            TokenSource::Bearer,
            TokenSource::Header(HeaderName::from_static("x-user-id")),
            TokenSource::Query("user_token".into()),
            TokenSource::Cookie("sid".into()),
        ]
    }

    fn token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
        let sources = sources();
        find_token(&sources, headers, query).map(|(_, token)| token)
    }

    #[test]
    fn tokens_are_found_in_source_order() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user-id", HeaderValue::from_static("from-header"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sid=from-cookie"),
        );
        assert_eq!(
            token(&headers, Some("user_token=from-query")),
            Some("from-header")
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  from-bearer "),
        );
        assert_eq!(token(&headers, None), Some("from-bearer"));
        assert_eq!(
            token(&HeaderMap::new(), Some("x=1&user_token=q")),
            Some("q")
        );
        let mut cookie_only = HeaderMap::new();
        cookie_only.insert(header::COOKIE, HeaderValue::from_static("sid=c"));
        assert_eq!(token(&cookie_only, None), Some("c"));
        assert!(token(&HeaderMap::new(), Some("other=1")).is_none());
    }

    proptest::proptest! {
        #[test]
        fn token_lookup_survives_any_input_and_returns_part_of_it(
            authorization in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            cookie in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            query in ".{0,80}",
        ) {
            let mut headers = HeaderMap::new();
            if let Ok(value) = HeaderValue::from_bytes(&authorization) {
                headers.insert(header::AUTHORIZATION, value);
            }
            if let Ok(value) = HeaderValue::from_bytes(&cookie) {
                headers.insert(header::COOKIE, value);
            }
            if let Some(token) = token(&headers, Some(&query)) {
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
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert!(find_token(&[TokenSource::Bearer], &headers, None).is_none());
    }

    #[test]
    fn only_the_validated_credential_is_forwarded() {
        let bearer = TokenSource::Bearer;
        let header = TokenSource::Header(HeaderName::from_static("x-user-id"));
        assert_eq!(
            credential(&header, "tok", &bearer).expect("header"),
            (
                HeaderName::from_static("x-user-id"),
                HeaderValue::from_static("tok")
            )
        );
        let cookie = TokenSource::Cookie("sid".into());
        assert_eq!(
            credential(&cookie, "c", &bearer).expect("cookie").1,
            "sid=c"
        );
        let query = TokenSource::Query("user_token".into());
        assert_eq!(
            credential(&query, "abc", &bearer).expect("query"),
            (
                header::AUTHORIZATION,
                HeaderValue::from_static("Bearer abc")
            )
        );
        assert_eq!(
            credential(&query, "abc", &header).expect("query as a header"),
            (
                HeaderName::from_static("x-user-id"),
                HeaderValue::from_static("abc")
            )
        );
        assert_eq!(
            credential(&query, "abc", &query)
                .expect("query as a query")
                .0,
            header::AUTHORIZATION
        );
    }
}
