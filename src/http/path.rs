//! Path patterns and poll templates: the `{name}` syntax of `[[stream]] path` and
//! `[[stream.source]] poll`.
//!
//! A path parameter is checked before anything else sees it: it is substituted into origin
//! paths and becomes part of a hub key, so only plain identifiers are accepted (no `/`, `..`,
//! NUL or over-long values, even percent-encoded).

use std::fmt;

use percent_encoding::percent_decode_str;

/// A path or declared query parameter that cannot be accepted; the request that carried it
/// is a client error. (The name says which: patterns and declarations share one namespace.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter `{name}` {why}")]
pub struct ParamError {
    /// The parameter's name in the pattern.
    pub name: String,
    /// What is wrong with its value.
    pub why: String,
}

/// Longest accepted path parameter, in bytes.
pub const MAX_PARAM_LEN: usize = 128;

/// One segment of a route pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Must equal the request's segment.
    Literal(String),
    /// Captures the request's segment as the parameter with this index.
    Param,
}

/// A parsed `[[stream]] path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
    params: Vec<String>,
}

impl PathPattern {
    /// Parses `/a/{name}/b`: literal segments and whole-segment `{name}` parameters.
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| "a stream path starts with `/`".to_owned())?;
        let mut segments = Vec::new();
        let mut params: Vec<String> = Vec::new();
        for segment in rest.split('/') {
            if segment.is_empty() {
                return Err("a stream path has no empty segments (`//` or a trailing `/`)".into());
            }
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                if !is_identifier(name) {
                    return Err(format!(
                        "`{{{name}}}` is not a parameter name (letters, digits, `_`)"
                    ));
                }
                if params.iter().any(|p| p == name) {
                    return Err(format!("parameter `{name}` appears twice"));
                }
                params.push(name.to_owned());
                segments.push(Segment::Param);
            } else if segment.contains(['{', '}', '?', '#', '%']) {
                return Err(format!(
                    "segment `{segment}` must be literal or a whole `{{name}}`"
                ));
            } else {
                segments.push(Segment::Literal(segment.to_owned()));
            }
        }
        Ok(PathPattern {
            text: text.to_owned(),
            segments,
            params,
        })
    }

    /// The parameter names, in order of appearance.
    pub fn params(&self) -> &[String] {
        &self.params
    }

    /// Matches a request path. `None`: not this route. `Some(Err)`: this route, but a
    /// parameter is unacceptable. `Some(Ok(values))`: the parameters, decoded and checked.
    ///
    /// Every request is matched against every stream route, so this walks the path once,
    /// comparing literals where they start (splitting it on `/` first cost 660 instructions
    /// per route and request, BENCHMARKS.md, issue 15.1).
    pub fn matches(&self, path: &str) -> Option<Result<Vec<String>, ParamError>> {
        let mut rest = path.strip_prefix('/')?;
        let mut values = Vec::with_capacity(self.params.len());
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                rest = rest.strip_prefix('/')?;
            }
            let end = match segment {
                Segment::Literal(literal) => {
                    let after = rest.strip_prefix(literal.as_str())?;
                    if !after.is_empty() && !after.starts_with('/') {
                        return None;
                    }
                    literal.len()
                }
                Segment::Param => {
                    let end = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
                    values.push(&rest[..end]);
                    end
                }
            };
            rest = &rest[end..];
        }
        if !rest.is_empty() {
            return None;
        }
        let checked = values
            .into_iter()
            .zip(&self.params)
            .map(|(raw, name)| check_param(name, raw))
            .collect();
        Some(checked)
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Decodes and checks one path parameter.
fn check_param(name: &str, raw: &str) -> Result<String, ParamError> {
    if raw.len() > MAX_PARAM_LEN * 3 {
        return Err(ParamError {
            name: name.to_owned(),
            why: format!("is longer than {MAX_PARAM_LEN} bytes"),
        });
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ParamError {
            name: name.to_owned(),
            why: "is not valid UTF-8 once decoded".to_owned(),
        })?;
    check_value(name, &decoded)?;
    Ok(decoded.into_owned())
}

/// Checks one decoded parameter value (a path segment, or one item of a query parameter):
/// it is substituted into origin paths and becomes part of a hub key, so only a plain,
/// bounded identifier is accepted.
pub fn check_value(name: &str, decoded: &str) -> Result<(), ParamError> {
    let bad = |why: &str| ParamError {
        name: name.to_owned(),
        why: why.to_owned(),
    };
    if decoded.is_empty() {
        return Err(bad("is empty"));
    }
    if decoded.len() > MAX_PARAM_LEN {
        return Err(bad(&format!("is longer than {MAX_PARAM_LEN} bytes")));
    }
    if decoded == "." || decoded == ".." {
        return Err(bad("must not be `.` or `..`"));
    }
    if !decoded
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    {
        return Err(bad("may hold only letters, digits, `-`, `_`, `.` and `~`"));
    }
    Ok(())
}

/// Whether `name` can name a parameter: letters, digits and `_`.
pub fn is_identifier(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A `[[stream.source]] poll` path with `{name}` placeholders for the route's parameters:
/// its path parameters, then its declared query parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollTemplate {
    parts: Vec<PollPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PollPart {
    Literal(String),
    /// Index into the route's parameter values (path parameters, then query parameters).
    Param(usize),
}

impl PollTemplate {
    /// Parses a poll path; every `{name}` must be a parameter of `route` or one of its
    /// declared `query` parameters.
    pub fn parse(
        text: &str,
        route: &PathPattern,
        query: &[String],
    ) -> Result<PollTemplate, String> {
        if !text.starts_with('/') {
            return Err("a poll path starts with `/`".to_owned());
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| "`{` without a closing `}`".to_owned())?;
            let name = &rest[open + 1..close];
            let index = route
                .params()
                .iter()
                .chain(query)
                .position(|p| p == name)
                .ok_or_else(|| {
                    format!(
                        "`{{{name}}}` is not a parameter of the stream path `{route}` nor one of \
                         its `query` parameters"
                    )
                })?;
            if open > 0 {
                parts.push(PollPart::Literal(rest[..open].to_owned()));
            }
            parts.push(PollPart::Param(index));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(PollPart::Literal(rest.to_owned()));
        }
        let rendered: String = parts
            .iter()
            .map(|p| match p {
                PollPart::Literal(s) => s.as_str(),
                PollPart::Param(_) => "x",
            })
            .collect();
        rendered
            .parse::<http::uri::PathAndQuery>()
            .map_err(|_| format!("`{text}` is not a valid path and query"))?;
        Ok(PollTemplate { parts })
    }

    /// The origin path for these parameter values (already checked to be plain identifiers,
    /// or comma-joined lists of them).
    pub fn render(&self, params: &[String]) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                PollPart::Literal(s) => out.push_str(s),
                PollPart::Param(i) => out.push_str(params.get(*i).map_or("", String::as_str)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk matches what splitting the path on `/` and comparing segment by segment
    /// matches, with the same parameters, for paths near the patterns.
    #[test]
    fn matching_agrees_with_comparing_split_segments() {
        fn split_match(pattern: &PathPattern, path: &str) -> Option<Vec<String>> {
            let mut parts = path.strip_prefix('/')?.split('/');
            let mut values = Vec::new();
            for segment in &pattern.segments {
                let part = parts.next()?;
                match segment {
                    Segment::Literal(literal) if literal == part => {}
                    Segment::Literal(_) => return None,
                    Segment::Param => values.push(part.to_owned()),
                }
            }
            parts.next().is_none().then_some(values)
        }
        let words = [
            "", "api", "v2", "stream", "streams", "str", "c", "42", "a%2Fb",
        ];
        let mut paths = vec![String::new(), "/".to_owned(), "api".to_owned()];
        for a in words {
            for b in words {
                for c in words {
                    paths.push(format!("/{a}/{b}/{c}"));
                    paths.push(format!("/{a}/{b}/{c}/"));
                    paths.push(format!("/api/v2/{a}/{b}/{c}"));
                    paths.push(format!("/{a}/{b}"));
                }
            }
        }
        for text in [
            "/api/v2/stream",
            "/c/{id}/stream",
            "/{a}/{b}",
            "/{id}",
            "/api",
        ] {
            let pattern = PathPattern::parse(text).expect("pattern");
            for path in &paths {
                let walked = pattern
                    .matches(path)
                    .map(|checked| checked.map_err(|error| error.name));
                let split = split_match(&pattern, path).map(|raw| {
                    raw.iter()
                        .zip(&pattern.params)
                        .map(|(raw, name)| check_param(name, raw).map_err(|error| error.name))
                        .collect::<Result<Vec<_>, _>>()
                });
                assert_eq!(walked, split, "{text} against {path:?}");
            }
        }
    }

    #[test]
    fn pattern_errors() {
        assert!(PathPattern::parse("api").is_err());
        assert!(PathPattern::parse("/a//b").is_err());
        assert!(PathPattern::parse("/a/{x}/{x}").is_err());
        assert!(PathPattern::parse("/a/x{y}").is_err());
    }

    #[test]
    fn poll_template_renders_parameters() {
        let route = PathPattern::parse("/c/{id}/stream").expect("pattern");
        let t = PollTemplate::parse("/c/{id}/sentiment?x={id}", &route, &[]).expect("template");
        assert_eq!(t.render(&["42".into()]), "/c/42/sentiment?x=42");
        assert!(PollTemplate::parse("/c/{other}", &route, &[]).is_err());
        assert!(PollTemplate::parse("c/{id}", &route, &[]).is_err());
        assert!(PollTemplate::parse("/c/{id", &route, &[]).is_err());
        let query = ["tickers".to_owned()];
        let t = PollTemplate::parse("/c/{id}/q?s={tickers}", &route, &query).expect("template");
        assert_eq!(
            t.render(&["42".into(), "AAPL,MSFT".into()]),
            "/c/42/q?s=AAPL,MSFT"
        );
    }
}
