//! Resolution of the browser-facing keys: `[cors]`, the proxy's own event names in `[sse]`,
//! and a stream route's declared `query` parameters.

use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::super::raw::{RawCors, RawOrigins, RawSse, RawStream};
use super::super::{AllowOrigins, AuthConfig, ConfigError, CorsConfig, EventNames, StreamConfig};
use super::{Resolver, check_event_name};
use crate::http::path::{PathPattern, is_identifier};
use crate::http::query::{Case, QueryKeys};

/// Ceiling of `query_max_values`: keys stay small (each value is at most 128 bytes).
const MAX_QUERY_VALUES: u64 = 1024;

/// Query parameters the proxy reads itself; a route cannot declare them.
const PROXY_QUERY: [&str; 1] = ["last_event_id"];

impl Resolver<'_> {
    pub(super) fn event_names(&self, raw: &RawSse) -> Result<EventNames, ConfigError> {
        let name = |value: &Spanned<String>, key: &str| -> Result<String, ConfigError> {
            check_event_name(value.get_ref())
                .map_err(|m| self.error(value.span(), &format!("sse.{key}"), m))?;
            Ok(value.get_ref().clone())
        };
        let names = EventNames {
            outage: name(&raw.outage_event, "outage_event")?,
            refused: name(&raw.refused_event, "refused_event")?,
            unavailable: name(&raw.unavailable_event, "unavailable_event")?,
            resync: name(&raw.resync_event, "resync_event")?,
            heartbeat: raw
                .heartbeat_event
                .as_ref()
                .map(|v| name(v, "heartbeat_event"))
                .transpose()?,
        };
        let spans = [
            &raw.outage_event,
            &raw.refused_event,
            &raw.unavailable_event,
            &raw.resync_event,
        ]
        .into_iter()
        .chain(raw.heartbeat_event.as_ref());
        let mut seen = Vec::new();
        for value in spans {
            if seen.contains(&value.get_ref()) {
                return Err(self.error(
                    value.span(),
                    "sse",
                    format!("`{}` names two of the proxy's events", value.get_ref()),
                ));
            }
            seen.push(value.get_ref());
        }
        Ok(names)
    }

    pub(super) fn cors(&self, raw: &Spanned<RawCors>) -> Result<CorsConfig, ConfigError> {
        let cors = raw.get_ref();
        let key = "cors.allow_origins";
        let span = cors.allow_origins.span();
        let allow_origins = match cors.allow_origins.get_ref() {
            RawOrigins::One(any) if any == "*" => AllowOrigins::Any,
            RawOrigins::One(one) => AllowOrigins::List(vec![
                parse_origin(one).map_err(|m| self.error(span.clone(), key, m))?,
            ]),
            RawOrigins::List(list) if list.is_empty() => {
                return Err(self.error(span, key, "list at least one origin, or \"*\""));
            }
            RawOrigins::List(list) => AllowOrigins::List(
                list.iter()
                    .map(|o| parse_origin(o).map_err(|m| self.error(span.clone(), key, m)))
                    .collect::<Result<_, _>>()?,
            ),
        };
        if cors.allow_credentials && allow_origins == AllowOrigins::Any {
            return Err(self.error(
                span,
                key,
                "`allow_credentials = true` needs an explicit list of origins: with \"*\" any \
                 site could read a signed-in user's streams",
            ));
        }
        let headers = |list: &[Spanned<String>], key: &str| {
            list.iter()
                .map(|h| {
                    HeaderName::from_bytes(h.get_ref().as_bytes())
                        .map_err(|_| self.error(h.span(), key, "is not a valid header name"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(CorsConfig {
            allow_origins,
            allow_credentials: cors.allow_credentials,
            expose_headers: headers(&cors.expose_headers, "cors.expose_headers")?,
            allow_headers: headers(&cors.allow_headers, "cors.allow_headers")?,
            max_age: Duration::from_secs(*cors.max_age_s.get_ref()),
        })
    }

    pub(super) fn query_keys(
        &self,
        raw: &RawStream,
        path: &PathPattern,
        index: usize,
    ) -> Result<QueryKeys, ConfigError> {
        let key = format!("stream[{index}].query");
        let mut names: Vec<String> = Vec::with_capacity(raw.query.len());
        for name in &raw.query {
            let text = name.get_ref();
            let why = if !is_identifier(text) {
                Some(format!(
                    "`{text}` is not a parameter name (letters, digits, `_`)"
                ))
            } else if names.contains(text) || path.params().contains(text) {
                Some(format!("`{text}` is already a parameter of this route"))
            } else if PROXY_QUERY.contains(&text.as_str()) {
                Some(format!("`{text}` is read by the proxy itself"))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(self.error(name.span(), &key, why));
            }
            names.push(text.clone());
        }
        let case = match raw.query_case.get_ref().as_str() {
            "preserve" => Case::Preserve,
            "upper" => Case::Upper,
            "lower" => Case::Lower,
            other => {
                return Err(self.error(
                    raw.query_case.span(),
                    &format!("stream[{index}].query_case"),
                    format!(
                        "`{other}` is not a case rule; use \"preserve\", \"upper\" or \"lower\""
                    ),
                ));
            }
        };
        let max_key = format!("stream[{index}].query_max_values");
        let max_values = self.positive(&raw.query_max_values, &max_key)?;
        if max_values > MAX_QUERY_VALUES {
            return Err(self.error(
                raw.query_max_values.span(),
                &max_key,
                format!("at most {MAX_QUERY_VALUES}: every value is part of a stream key"),
            ));
        }
        Ok(QueryKeys {
            names,
            case,
            max_values: max_values as usize,
        })
    }

    /// A token carried in the query (`query:NAME`) must never become a stream key: it would
    /// be polled with, shared, and kept in memory as a key.
    pub(super) fn query_is_not_a_token(
        &self,
        raw: &Spanned<RawStream>,
        stream: &StreamConfig,
        auth: Option<&AuthConfig>,
        index: usize,
    ) -> Result<(), ConfigError> {
        let Some(auth) = auth else { return Ok(()) };
        for (name, spanned) in stream.query.names.iter().zip(&raw.get_ref().query) {
            let is_token = auth
                .sources
                .iter()
                .any(|s| matches!(s, super::super::TokenSource::Query(q) if q == name));
            if is_token {
                return Err(self.error(
                    spanned.span(),
                    &format!("stream[{index}].query"),
                    format!("`{name}` is an [auth] token source; a token is never a stream key"),
                ));
            }
        }
        Ok(())
    }
}

/// A serialised origin (`scheme://host[:port]`), lower-cased for comparison.
fn parse_origin(text: &str) -> Result<String, String> {
    let bad = || {
        format!(
            "`{text}` is not an origin; write it as a browser sends it: \"https://app.example.com\" (no path, no trailing `/`)"
        )
    };
    let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
    if !(scheme == "http" || scheme == "https")
        || rest.is_empty()
        || rest.contains(['/', '?', '#', '@', ' ', '*'])
    {
        return Err(bad());
    }
    Ok(text.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::super::Config;
    use super::*;

    const BASE: &str = r#"
[listen]
http = "127.0.0.1:0"

[upstream]
url = "http://127.0.0.1:9000"

[auth]
validate = "/v"
sources = ["bearer", "query:user_token"]

[sse]

[[stream]]
path = "/quotes"
query = ["tickers"]
  [[stream.source]]
  poll = "/q?s={tickers}"
  event = "quotes"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "proxy.toml", Path::new("."), &|_| None)
    }

    /// The error's line, key and message.
    fn invalid(text: &str) -> (usize, String, String) {
        crate::config::testing::invalid_parts(parse(text))
    }

    #[test]
    fn defaults_and_query_keys() {
        let config = parse(BASE).expect("valid");
        assert_eq!(config.sse.heartbeat, Duration::from_secs(15));
        assert_eq!(*config.sse.events, EventNames::default());
        assert!(config.cors.is_none());
        let route = &config.streams[0];
        assert_eq!(route.query.names, ["tickers"]);
        assert_eq!(route.max_keys, config.sse.max_streams);
        assert_eq!(
            route.sources[0].poll.render(&["AAPL,MSFT".into()]),
            "/q?s=AAPL,MSFT"
        );
    }

    #[test]
    fn cors_is_resolved_and_credentials_never_go_with_any_origin() {
        let text = format!(
            "{BASE}\n[cors]\nallow_origins = [\"https://App.example:8443\"]\nallow_credentials = true\n"
        );
        let cors = parse(&text).expect("valid").cors.expect("cors");
        assert_eq!(
            cors.allow_origins,
            AllowOrigins::List(vec!["https://app.example:8443".into()])
        );
        let text = format!("{BASE}\n[cors]\nallow_origins = \"*\"\nallow_credentials = true\n");
        let (line, key, message) = invalid(&text);
        assert_eq!((line, key.as_str()), (22, "cors.allow_origins"));
        assert!(message.contains("explicit list"), "{message}");
        for bad in [
            "\"https://a.example/\"",
            "[\"a.example\"]",
            "[]",
            "\"null\"",
        ] {
            let text = format!("{BASE}\n[cors]\nallow_origins = {bad}\n");
            let (_, key, _) = invalid(&text);
            assert_eq!(key, "cors.allow_origins", "{bad}");
        }
        let text = format!("{BASE}\n[cors]\nallow_origins = \"*\"\nmax_agee_s = 1\n");
        let (_, _, message) = invalid(&text);
        assert!(message.contains("max_agee_s"), "{message}");
    }

    #[test]
    fn event_names_are_checked() {
        let with = |line: &str| BASE.replace("[sse]\n", &format!("[sse]\n{line}\n"));
        let (line, key, _) = invalid(&with("outage_event = \"error\""));
        assert_eq!((line, key.as_str()), (13, "sse.outage_event"));
        let (_, key, message) = invalid(&with("heartbeat_event = \"resync\""));
        assert_eq!(key, "sse");
        assert!(message.contains("two"), "{message}");
        let (_, key, message) = invalid(&with("outage_event = \"quotes\""));
        assert_eq!(key, "stream[0].source[0].event");
        assert!(message.contains("quotes"), "{message}");
        // A snapshot source sends only its own name; an items source also `<name>_removed`.
        parse(&with("outage_event = \"quotes_removed\"")).expect("no clash for a snapshot");
        let items = with("outage_event = \"quotes_removed\"").replace(
            "event = \"quotes\"",
            "event = \"quotes\"\n  mode = \"items\"\n  items = \"/q\"\n  key = \"s\"",
        );
        let (_, key, message) = invalid(&items);
        assert_eq!(key, "stream[0].source[0].event");
        assert!(message.contains("quotes_removed"), "{message}");
        let config = parse(&with("heartbeat_event = \"heartbeat\"")).expect("valid");
        assert_eq!(
            config.streams[0].events.heartbeat.as_deref(),
            Some("heartbeat")
        );
    }

    #[test]
    fn query_declarations_are_checked() {
        for (bad, why) in [
            ("[\"user_token\"]", "token source"),
            ("[\"last_event_id\"]", "proxy itself"),
            ("[\"a-b\"]", "not a parameter name"),
            ("[\"tickers\", \"tickers\"]", "already"),
        ] {
            let text = BASE.replace("query = [\"tickers\"]", &format!("query = {bad}"));
            let text = text.replace("{tickers}", "x");
            let (line, key, message) = invalid(&text);
            assert_eq!((line, key.as_str()), (16, "stream[0].query"), "{bad}");
            assert!(message.contains(why), "{bad}: {message}");
        }
        let text = BASE.replace(
            "query = [\"tickers\"]",
            "query = [\"tickers\"]\nquery_case = \"title\"",
        );
        let (_, key, _) = invalid(&text);
        assert_eq!(key, "stream[0].query_case");
        let text = BASE.replace("{tickers}", "{symbols}");
        let (_, key, message) = invalid(&text);
        assert_eq!(key, "stream[0].source[0].poll");
        assert!(message.contains("symbols"), "{message}");
        let text = BASE.replace(
            "query = [\"tickers\"]",
            "query = [\"tickers\"]\nmax_keys = 0",
        );
        let (_, key, _) = invalid(&text);
        assert_eq!(key, "stream[0].max_keys");
    }
}
