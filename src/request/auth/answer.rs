//! Reading a validator's JSON answer: the user id, the expiry and the reason, each found by a
//! JSON pointer and checked, so a malformed answer is a clear failure and never a guess.

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::{Iso8601, Rfc3339};

/// Longest user id accepted (it becomes a header value and part of the stream key).
const MAX_USER_ID_LEN: usize = 256;

/// What a verifier concluded about one token.
#[derive(Debug, PartialEq)]
pub(super) enum Checked {
    /// The token is good; `expires_at` caps how long that is trusted.
    Valid {
        /// Who it belongs to.
        user_id: String,
        /// When it stops being valid, when the validator said.
        expires_at: Option<OffsetDateTime>,
    },
    /// The token is bad: the client hears this status and detail.
    Rejected {
        /// 401 or 403.
        status: http::StatusCode,
        /// Why, as the validator said it or as the proxy judged it.
        detail: String,
    },
}

impl Checked {
    /// A 401 rejection.
    pub(super) fn unauthorized(detail: impl Into<String>) -> Checked {
        Checked::Rejected {
            status: http::StatusCode::UNAUTHORIZED,
            detail: detail.into(),
        }
    }
}

/// The body as JSON, or why it is not.
pub(super) fn json(body: &[u8], who: &str) -> Result<Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("{who}'s answer is not JSON: {e}"))
}

/// The user id at the first of `pointers` present: a non-empty string or a number of
/// printable ASCII, at most 256 bytes.
pub(super) fn user_id(answer: &Value, pointers: &[String], who: &str) -> Result<String, String> {
    let found = pointers
        .iter()
        .find_map(|p| answer.pointer(p).filter(|v| !v.is_null()));
    let id = match found {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => {
            return Err(format!(
                "{who}'s user id ({}) is neither a string nor a number",
                pointers.join(" or ")
            ));
        }
        None => {
            return Err(format!(
                "{who}'s answer has no user id at {}",
                pointers.join(" or ")
            ));
        }
    };
    let usable =
        !id.is_empty() && id.len() <= MAX_USER_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic());
    if usable {
        Ok(id)
    } else {
        Err(format!(
            "{who}'s user id is empty, longer than {MAX_USER_ID_LEN} bytes or not printable ASCII"
        ))
    }
}

/// The expiry at `pointer`: absent or null is "not said"; RFC 3339 (an ISO 8601 time without
/// an offset is taken as UTC, as Python's `isoformat()` writes it) or epoch seconds; anything
/// else is a malformed answer.
pub(super) fn expiry(
    answer: &Value,
    pointer: &str,
    who: &str,
) -> Result<Option<OffsetDateTime>, String> {
    let unreadable =
        || format!("{who}'s expiry at {pointer} is neither RFC 3339 nor epoch seconds");
    match answer.pointer(pointer) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => parse_time(text).map(Some).ok_or_else(unreadable),
        Some(Value::Number(n)) => {
            let seconds = n.as_f64().ok_or_else(unreadable)?;
            epoch(seconds).map(Some).ok_or_else(unreadable)
        }
        Some(_) => Err(unreadable()),
    }
}

/// Epoch seconds as a time, if representable.
pub(super) fn epoch(seconds: f64) -> Option<OffsetDateTime> {
    if !seconds.is_finite() {
        return None;
    }
    let nanos = (seconds * 1e9) as i128;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(at);
    }
    if let Ok(at) = OffsetDateTime::parse(text, &Iso8601::DEFAULT) {
        return Some(at);
    }
    time::PrimitiveDateTime::parse(text, &Iso8601::DEFAULT)
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

/// The reason a validator gave for a refusal (`detail`, `message` or `error`), if any.
pub(super) fn reason(answer: &Value) -> Option<String> {
    ["detail", "message", "error"]
        .iter()
        .find_map(|key| match answer.get(key)? {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(pointer: &str) -> Vec<String> {
        vec![pointer.to_owned()]
    }

    #[test]
    fn user_ids_are_checked() {
        assert_eq!(
            user_id(&json!({"user_id": 42}), &p("/user_id"), "v").as_deref(),
            Ok("42")
        );
        assert!(user_id(&json!({"user_id": "a\nb"}), &p("/user_id"), "v").is_err());
        assert!(user_id(&json!({"user_id": ""}), &p("/user_id"), "v").is_err());
        assert!(user_id(&json!({"user_id": true}), &p("/user_id"), "v").is_err());
        assert!(user_id(&json!({}), &p("/user_id"), "v").is_err());
        let both = vec!["/sub".to_owned(), "/username".to_owned()];
        assert_eq!(
            user_id(&json!({"username": "ann"}), &both, "v").as_deref(),
            Ok("ann")
        );
    }

    #[test]
    fn expiries_are_read_or_refused() {
        let at = |v: Value| expiry(&json!({ "e": v }), "/e", "v");
        assert_eq!(at(Value::Null), Ok(None));
        assert_eq!(expiry(&json!({}), "/e", "v"), Ok(None));
        let want = OffsetDateTime::from_unix_timestamp(1_000_000_000).expect("time");
        assert_eq!(at(json!(1_000_000_000)), Ok(Some(want)));
        assert_eq!(at(json!("2001-09-09T01:46:40Z")), Ok(Some(want)));
        assert_eq!(at(json!("2001-09-09T01:46:40+00:00")), Ok(Some(want)));
        assert_eq!(
            at(json!("2001-09-09T01:46:40.000000")),
            Ok(Some(want)),
            "naive ISO 8601 is UTC"
        );
        assert!(at(json!("tomorrow")).is_err());
        assert!(at(json!({"a": 1})).is_err());
        assert!(at(json!(1e300)).is_err());
    }

    #[test]
    fn reasons_come_from_the_usual_fields() {
        assert_eq!(
            reason(&json!({"valid": false, "error": "expired", "message": "Session expired"}))
                .as_deref(),
            Some("Session expired")
        );
        assert_eq!(reason(&json!({"detail": "nope"})).as_deref(), Some("nope"));
        assert_eq!(reason(&json!({"valid": false})), None);
    }
}
