//! From polled documents to changes.
//!
//! A [`Tracker`] remembers, per source, a 128-bit content hash of what was last published
//! (the whole document in snapshot mode, each item by key in items mode) and the last raw
//! body, so an unchanged body costs one byte comparison and no parsing. Documents are
//! compared in canonical form (serde_json's sorted maps, compact), so an origin that
//! reorders keys or whitespace does not produce events.
//!
//! The hashes double as the building blocks of content-derived event ids: the channel sums
//! them (see [`crate::stream::channel`]), so any proxy instance that sees the same states
//! computes the same ids. Each hash is salted with the source's event name and the item
//! key, so equal values under different keys never cancel out.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde_json::Value;

use crate::config::Mode;

/// What one change does to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The item key, or `None` for a snapshot source's whole document.
    pub key: Option<String>,
    /// Hash of the value being replaced, 0 when there was none.
    pub old_hash: u128,
    /// The new canonical JSON and its hash, or `None` when the item was removed.
    pub new: Option<(u128, String)>,
}

/// Why a polled document could not be turned into changes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    /// The body is not JSON.
    #[error("the origin's body is not JSON: {0}")]
    NotJson(String),
    /// Items mode: nothing, or not an array, at the pointer.
    #[error("no JSON array at `{0}` in the origin's document")]
    NoArray(String),
    /// Items mode: an element is not an object with a string or number key.
    #[error("item {index} has no string or number field `{key}`")]
    MissingKey {
        /// Position in the array.
        index: usize,
        /// The configured key field.
        key: String,
    },
    /// Items mode: two elements share a key, so the diff would be ambiguous.
    #[error("two items share the key `{0}`")]
    DuplicateKey(String),
}

/// Per-source memory of what was last published.
#[derive(Debug)]
pub struct Tracker {
    /// How documents become changes.
    mode: Mode,
    /// Salt for hashes: the source's event name.
    salt: String,
    /// Last body that was turned into changes; an identical body is skipped unparsed.
    raw: Option<Bytes>,
    /// Snapshot mode: hash of the current document.
    snapshot: u128,
    /// Items mode: hash of each current item by key.
    items: HashMap<String, u128>,
}

impl Tracker {
    /// A tracker that has published nothing yet.
    pub fn new(mode: Mode, event: &str) -> Tracker {
        Tracker {
            mode,
            salt: event.to_owned(),
            raw: None,
            snapshot: 0,
            items: HashMap::new(),
        }
    }

    /// A tracker that has published the values with these content hashes (by item key, or
    /// `None` for a snapshot document), as a state kept after an earlier poller stopped: its
    /// first document is diffed against them, so only what changed since is published.
    pub fn resume(
        mode: Mode,
        event: &str,
        published: impl Iterator<Item = (Option<String>, u128)>,
    ) -> Tracker {
        let mut tracker = Tracker::new(mode, event);
        for (key, hash) in published {
            match key {
                Some(key) => {
                    tracker.items.insert(key, hash);
                }
                None => tracker.snapshot = hash,
            }
        }
        tracker
    }

    /// The changes that turn the published state into `body`'s, in a deterministic order
    /// (array order for upserts, then removals by key). On error nothing is remembered.
    pub fn apply(&mut self, body: &Bytes) -> Result<Vec<Change>, DeltaError> {
        if self.raw.as_ref() == Some(body) {
            return Ok(Vec::new());
        }
        let document: Value =
            serde_json::from_slice(body).map_err(|e| DeltaError::NotJson(e.to_string()))?;
        let changes = match &self.mode {
            Mode::Snapshot => self.snapshot_changes(&document),
            Mode::Items { pointer, key } => {
                let changes = items_changes(&self.salt, &self.items, &document, pointer, key)?;
                for change in &changes {
                    let key = change.key.clone().unwrap_or_default();
                    match &change.new {
                        Some((hash, _)) => self.items.insert(key, *hash),
                        None => self.items.remove(&key),
                    };
                }
                changes
            }
        };
        self.raw = Some(body.clone());
        Ok(changes)
    }

    fn snapshot_changes(&mut self, document: &Value) -> Vec<Change> {
        let canonical = document.to_string();
        let hash = content_hash(&self.salt, "", &canonical);
        if hash == self.snapshot {
            return Vec::new();
        }
        let old_hash = std::mem::replace(&mut self.snapshot, hash);
        vec![Change {
            key: None,
            old_hash,
            new: Some((hash, canonical)),
        }]
    }
}

fn items_changes(
    salt: &str,
    current: &HashMap<String, u128>,
    document: &Value,
    pointer: &str,
    key_field: &str,
) -> Result<Vec<Change>, DeltaError> {
    let array = document
        .pointer(pointer)
        .and_then(Value::as_array)
        .ok_or_else(|| DeltaError::NoArray(pointer.to_owned()))?;
    let mut seen = HashSet::with_capacity(array.len());
    let mut changes = Vec::new();
    for (index, item) in array.iter().enumerate() {
        let key = match item.get(key_field) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(DeltaError::MissingKey {
                    index,
                    key: key_field.to_owned(),
                });
            }
        };
        if !seen.insert(key.clone()) {
            return Err(DeltaError::DuplicateKey(key));
        }
        let canonical = item.to_string();
        let hash = content_hash(salt, &key, &canonical);
        let old_hash = current.get(&key).copied().unwrap_or(0);
        if old_hash != hash {
            changes.push(Change {
                key: Some(key),
                old_hash,
                new: Some((hash, canonical)),
            });
        }
    }
    let mut removed: Vec<(&String, &u128)> =
        current.iter().filter(|(k, _)| !seen.contains(*k)).collect();
    removed.sort_unstable_by(|a, b| a.0.cmp(b.0));
    changes.extend(removed.into_iter().map(|(key, hash)| Change {
        key: Some(key.clone()),
        old_hash: *hash,
        new: None,
    }));
    Ok(changes)
}

/// A 128-bit content hash of one value under one key of one source (never 0, which means
/// "absent").
pub fn content_hash(salt: &str, key: &str, canonical: &str) -> u128 {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(salt.as_bytes());
    context.update(&[0]);
    context.update(key.as_bytes());
    context.update(&[0]);
    context.update(canonical.as_bytes());
    let digest = context.finish();
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest.as_ref()[..16]);
    u128::from_be_bytes(first).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items() -> Tracker {
        Tracker::new(
            Mode::Items {
                pointer: "/tickers".into(),
                key: "symbol".into(),
            },
            "sentiment_update",
        )
    }

    fn body(text: &str) -> Bytes {
        Bytes::from(text.to_owned())
    }

    fn keys(changes: &[Change]) -> Vec<(String, bool)> {
        changes
            .iter()
            .map(|c| (c.key.clone().unwrap_or_default(), c.new.is_some()))
            .collect()
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v: Value = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":3}}"#).expect("json");
        assert_eq!(v.to_string(), r#"{"a":{"c":3,"d":2},"b":1}"#);
    }

    #[test]
    fn snapshot_changes_only_when_content_changes() {
        let mut t = Tracker::new(Mode::Snapshot, "metrics");
        let first = t.apply(&body(r#"{"a":1,"b":2}"#)).expect("json");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].old_hash, 0);
        assert!(
            t.apply(&body(r#"{"b":2, "a":1}"#))
                .expect("json")
                .is_empty()
        );
        let second = t.apply(&body(r#"{"a":1,"b":3}"#)).expect("json");
        assert_eq!(second[0].old_hash, first[0].new.as_ref().expect("new").0);
        assert_eq!(second[0].new.as_ref().expect("new").1, r#"{"a":1,"b":3}"#);
    }

    #[test]
    fn items_added_changed_removed() {
        let mut t = items();
        let c = t
            .apply(&body(
                r#"{"tickers":[{"symbol":"B","s":1},{"symbol":"A","s":1}]}"#,
            ))
            .expect("json");
        assert_eq!(keys(&c), vec![("B".into(), true), ("A".into(), true)]);
        let c = t
            .apply(&body(
                r#"{"tickers":[{"symbol":"A","s":2},{"symbol":"C","s":1}]}"#,
            ))
            .expect("json");
        assert_eq!(
            keys(&c),
            vec![("A".into(), true), ("C".into(), true), ("B".into(), false)]
        );
        assert!(
            t.apply(&body(
                r#"{"tickers":[{"s":2,"symbol":"A"},{"symbol":"C","s":1}],"x":1}"#
            ))
            .expect("json")
            .is_empty()
        );
    }

    #[test]
    fn bad_documents_are_errors_and_change_nothing() {
        let mut t = items();
        assert!(matches!(
            t.apply(&body("<html>")),
            Err(DeltaError::NotJson(_))
        ));
        assert_eq!(
            t.apply(&body(r#"{"tickers":{}}"#)),
            Err(DeltaError::NoArray("/tickers".into()))
        );
        assert!(matches!(
            t.apply(&body(r#"{"tickers":[{"name":"x"}]}"#)),
            Err(DeltaError::MissingKey { index: 0, .. })
        ));
        assert_eq!(
            t.apply(&body(r#"{"tickers":[{"symbol":1},{"symbol":1}]}"#)),
            Err(DeltaError::DuplicateKey("1".into()))
        );
        let c = t
            .apply(&body(r#"{"tickers":[{"symbol":1}]}"#))
            .expect("json");
        assert_eq!(keys(&c), vec![("1".into(), true)]);
    }

    #[test]
    fn hashes_are_salted_by_source_and_key() {
        assert_ne!(content_hash("a", "k", "1"), content_hash("b", "k", "1"));
        assert_ne!(content_hash("a", "k", "1"), content_hash("a", "j", "1"));
        assert_eq!(content_hash("a", "k", "1"), content_hash("a", "k", "1"));
    }
}
