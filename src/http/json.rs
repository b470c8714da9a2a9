//! JSON bodies: the proxy's own, and the `detail` an origin's error body may carry.

use bytes::Bytes;

/// Serialises a JSON value; `serde_json::Value` always serialises.
pub fn json_bytes(value: &serde_json::Value) -> Bytes {
    Bytes::from(value.to_string())
}

/// Pulls `detail` out of an origin's JSON error body, if it has one.
pub fn origin_detail(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    match value.get("detail")? {
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_detail_reads_strings_and_other_values() {
        assert_eq!(
            origin_detail(br#"{"detail":"nope"}"#).as_deref(),
            Some("nope")
        );
        assert_eq!(
            origin_detail(br#"{"detail":{"a":1}}"#).as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert_eq!(origin_detail(b"<html>"), None);
    }
}
