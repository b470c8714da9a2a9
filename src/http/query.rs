//! Query strings.

/// The value of one query parameter (not percent-decoded: tokens are printable ASCII).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_parameter_by_exact_name() {
        assert_eq!(query_param("a=1&user_token=x&b", "user_token"), Some("x"));
        assert_eq!(query_param("a=1&b", "b"), Some(""));
        assert_eq!(query_param("xuser_token=1", "user_token"), None);
    }
}
