//! Query strings: reading one parameter, and the declared query parameters of a stream route
//! that become part of its stream key.

use std::collections::BTreeSet;

use percent_encoding::percent_decode_str;

use super::path::{MAX_PARAM_LEN, ParamError, check_value};

/// The value of one query parameter (not percent-decoded: tokens are printable ASCII).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Default bound on the values one declared query parameter may carry.
pub const DEFAULT_MAX_VALUES: usize = 16;

/// How the values of declared query parameters are cased before they become a key, so
/// `?tickers=aapl` and `?tickers=AAPL` can share one poller when the origin does not care.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Case {
    /// Values are kept as sent.
    #[default]
    Preserve,
    /// Values are upper-cased (ASCII).
    Upper,
    /// Values are lower-cased (ASCII).
    Lower,
}

/// The query parameters a stream route declares (`query = ["tickers"]`). Each one's values
/// (comma-separated, repeated, or both) are checked like path parameters, cased, sorted and
/// de-duplicated into one canonical comma-joined string, so every spelling of the same set
/// shares one stream key. Undeclared parameters are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryKeys {
    /// The declared names, in declaration order (the order of their values in a key).
    pub names: Vec<String>,
    /// The case rule applied to every value.
    pub case: Case,
    /// Most values one parameter may carry; more is a client error. With the bound on each
    /// value's length this bounds a key's size and the sets a client can name.
    pub max_values: usize,
}

impl QueryKeys {
    /// The canonical value of every declared parameter, in declaration order; an absent
    /// parameter is the empty string (an empty set).
    pub fn values(&self, query: Option<&str>) -> Result<Vec<String>, ParamError> {
        self.names
            .iter()
            .map(|name| self.canonical(name, query.unwrap_or("")))
            .collect()
    }

    fn canonical(&self, name: &str, query: &str) -> Result<String, ParamError> {
        let bad = |why: String| ParamError {
            name: name.to_owned(),
            why,
        };
        // Sorted and de-duplicated as collected, so its size is the bound to check.
        let mut items: BTreeSet<String> = BTreeSet::new();
        for pair in query.split('&') {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            if key != name {
                continue;
            }
            // Bounded before decoding: each item at most MAX_PARAM_LEN bytes, plus commas,
            // percent-encoded at worst.
            if raw.len() > (MAX_PARAM_LEN + 1) * self.max_values * 3 {
                return Err(bad(format!(
                    "is too long: at most {} values of {MAX_PARAM_LEN} bytes",
                    self.max_values
                )));
            }
            let decoded = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| bad("is not valid UTF-8 once decoded".to_owned()))?;
            for item in decoded.split(',').filter(|item| !item.is_empty()) {
                check_value(name, item)?;
                items.insert(match self.case {
                    Case::Preserve => item.to_owned(),
                    Case::Upper => item.to_ascii_uppercase(),
                    Case::Lower => item.to_ascii_lowercase(),
                });
                if items.len() > self.max_values {
                    return Err(bad(format!(
                        "has more than {} distinct values",
                        self.max_values
                    )));
                }
            }
        }
        Ok(items.into_iter().collect::<Vec<_>>().join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(case: Case) -> QueryKeys {
        QueryKeys {
            names: vec!["tickers".into(), "res".into()],
            case,
            max_values: 3,
        }
    }

    proptest::proptest! {
        #[test]
        fn any_query_gives_a_bounded_canonical_key_or_an_error(
            pairs in proptest::collection::vec(
                ("(tickers|res|x|)", "[a-zA-Z0-9,%.~_/ +-]{0,24}"),
                0..12,
            ),
            noise in "[ -~]{0,100}",
        ) {
            let mut query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            query.push(noise);
            let query = query.join("&");
            let k = keys(Case::Upper);
            if let Ok(values) = k.values(Some(&query)) {
                for value in values {
                    let items: Vec<&str> = value.split(',').filter(|i| !i.is_empty()).collect();
                    proptest::prop_assert!(items.len() <= k.max_values);
                    proptest::prop_assert!(items.windows(2).all(|w| w[0] < w[1]));
                    proptest::prop_assert!(items.iter().all(|i| check_value("x", i).is_ok()));
                }
            }
        }
    }

    #[test]
    fn finds_a_parameter_by_exact_name() {
        assert_eq!(query_param("a=1&user_token=x&b", "user_token"), Some("x"));
        assert_eq!(query_param("a=1&b", "b"), Some(""));
        assert_eq!(query_param("xuser_token=1", "user_token"), None);
    }

    #[test]
    fn values_are_sorted_deduplicated_and_cased() {
        let k = keys(Case::Upper);
        let values = k.values(Some("tickers=msft,AAPL&x=1&tickers=aapl%2CMSFT&res=1m"));
        assert_eq!(values, Ok(vec!["AAPL,MSFT".to_owned(), "1M".to_owned()]));
        assert_eq!(k.values(None), Ok(vec![String::new(), String::new()]));
        let k = keys(Case::Preserve);
        assert_eq!(
            k.values(Some("tickers=b,a,,B")),
            Ok(vec!["B,a,b".to_owned(), String::new()])
        );
        assert_eq!(
            keys(Case::Lower).values(Some("res=H1")),
            Ok(vec![String::new(), "h1".to_owned()])
        );
    }

    #[test]
    fn hostile_values_are_rejected() {
        let k = keys(Case::Preserve);
        for bad in [
            "tickers=..",
            "tickers=a/b",
            "tickers=%2e%2e",
            "tickers=a%00",
            "tickers=%ff",
            "tickers=a b",
            "tickers=a,b,c,d",
            "tickers=a&tickers=b&tickers=c&tickers=d",
        ] {
            assert!(k.values(Some(bad)).is_err(), "{bad} should be rejected");
        }
        let long = format!("tickers={}", "a".repeat(MAX_PARAM_LEN + 1));
        assert!(k.values(Some(&long)).is_err());
        let flood = format!("tickers={}", "a,".repeat(100_000));
        assert!(k.values(Some(&flood)).is_err());
        // Repeats of one value are one value.
        assert_eq!(
            k.values(Some("tickers=a,a,a,a,a")),
            Ok(vec!["a".to_owned(), String::new()])
        );
    }
}
