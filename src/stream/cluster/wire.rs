//! What instances write to Redis and read back: a stream entry per batch of a poller's
//! changes (or per notice), and a hash field per live slot. JSON, so an operator can read
//! them with `redis-cli`, and versioned by shape only (unknown entries are skipped).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::stream::state::SharedChange;

/// One entry of a stream key's Redis stream (field `b`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Notice {
    /// A poll's changes of source `s`, in order.
    Changes {
        /// The source within the route.
        s: usize,
        /// The changes.
        c: Vec<Record>,
    },
    /// A whole state, written by a holder that found Redis without the key (restarted or
    /// expired), so that nobody converges on a partial one: (source, record) in order.
    Seed {
        /// The slots that differed from what Redis held: set, or removed.
        c: Vec<(usize, Record)>,
        /// The holder's state id: a follower whose state has another one converges.
        id: String,
    },
    /// Source `s` is failing; `data` is the outage event's data.
    Outage {
        /// The source within the route.
        s: usize,
        /// The outage event's JSON data.
        data: String,
    },
    /// Source `s` answers again.
    Recovered {
        /// The source within the route.
        s: usize,
    },
    /// The origin refused the stream's resource (401, 403, 404, 410).
    Refused {
        /// The origin's status.
        status: u16,
        /// The origin's detail.
        detail: String,
        /// The origin's JSON body, if it had one.
        body: Option<String>,
    },
}

/// One change in a [`Notice::Changes`], and one live slot's value in the state hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// The item key, or `None` for a snapshot document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<String>,
    /// The new value's content hash (hex); `None`: removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h: Option<String>,
    /// The new value's canonical JSON; `None`: removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v: Option<String>,
    /// The state's id after this change.
    pub i: String,
}

impl Record {
    /// The wire form of a change.
    pub fn of(change: &SharedChange) -> Record {
        Record {
            k: change.key.clone(),
            h: change.new.as_ref().map(|(hash, _)| format!("{hash:032x}")),
            v: change.new.as_ref().map(|(_, json)| json.clone()),
            i: change.id.clone(),
        }
    }

    /// The change this record of `source` describes; `None` when it is malformed.
    pub fn change(&self, source: usize) -> Option<SharedChange> {
        let new = match (&self.h, &self.v) {
            (Some(hash), Some(json)) => Some((u128::from_str_radix(hash, 16).ok()?, json.clone())),
            (None, None) => None,
            _ => return None,
        };
        Some(SharedChange {
            source,
            key: self.k.clone(),
            new,
            id: self.i.clone(),
        })
    }
}

impl Notice {
    /// The changes it carries, in order (none for notices that carry no state).
    pub fn changes(&self) -> Vec<SharedChange> {
        match self {
            Notice::Changes { s, c } => c.iter().filter_map(|r| r.change(*s)).collect(),
            Notice::Seed { c, .. } => c.iter().filter_map(|(s, r)| r.change(*s)).collect(),
            _ => Vec::new(),
        }
    }
}

/// A publication's parts: the notice's JSON and the state updates of its records (field,
/// record JSON, or `""` to remove the field). `None` only if serialising failed, which plain
/// strings and numbers cannot do; a removal is never written by mistake.
pub fn publication(
    notice: &Notice,
    records: &[(usize, &Record)],
) -> Option<(String, Vec<(String, String)>)> {
    let text = serde_json::to_string(notice).ok()?;
    let slots = records
        .iter()
        .map(|(source, record)| {
            let value = match record.h {
                Some(_) => serde_json::to_string(record).ok()?,
                None => String::new(),
            };
            Some((slot_field(*source, &record.k), value))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((text, slots))
}

/// The state hash's field for a slot: `[source, key]` as JSON.
pub fn slot_field(source: usize, key: &Option<String>) -> String {
    serde_json::json!([source, key]).to_string()
}

/// The live slots in a state hash (field → `"<stream id> <position> <record>"`, written by
/// the publish script), in publication order. Malformed fields are skipped.
pub fn current_slots(hash: HashMap<String, String>) -> Vec<SharedChange> {
    let mut slots: Vec<((u64, u64, u64), SharedChange)> = hash
        .into_iter()
        .filter_map(|(field, value)| {
            let (source, _): (usize, Option<String>) = serde_json::from_str(&field).ok()?;
            let mut parts = value.splitn(3, ' ');
            let (id, position, record) = (parts.next()?, parts.next()?, parts.next()?);
            let order = (stream_order(id)?, position.parse().ok()?);
            let record: Record = serde_json::from_str(record).ok()?;
            let change = record.change(source).filter(|c| c.new.is_some())?;
            Some(((order.0.0, order.0.1, order.1), change))
        })
        .collect();
    slots.sort_by_key(|(order, _)| *order);
    slots.into_iter().map(|(_, change)| change).collect()
}

/// A Redis stream id (`<ms>-<seq>`) as a sortable pair.
pub fn stream_order(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_slots_keep_publication_order() {
        let change = SharedChange {
            source: 1,
            key: Some("AAPL".into()),
            new: Some((0xabc, "{\"p\":1}".into())),
            id: "00ff".into(),
        };
        let record = Record::of(&change);
        let text = serde_json::to_string(&Notice::Changes {
            s: 1,
            c: vec![record.clone()],
        })
        .expect("json");
        assert!(text.starts_with("{\"t\":\"changes\""), "{text}");
        assert_eq!(record.change(1), Some(change.clone()));
        let removal = Record {
            h: None,
            v: None,
            ..record.clone()
        };
        assert_eq!(removal.change(1).and_then(|c| c.new), None);
        let broken = Record {
            v: None,
            ..record.clone()
        };
        assert_eq!(broken.change(1), None);

        let json = serde_json::to_string(&record).expect("json");
        let mut hash = HashMap::new();
        hash.insert(
            slot_field(1, &Some("AAPL".into())),
            format!("10-2 7 {json}"),
        );
        let other = Record {
            k: Some("MSFT".into()),
            ..record.clone()
        };
        let other_json = serde_json::to_string(&other).expect("json");
        hash.insert(
            slot_field(1, &Some("MSFT".into())),
            format!("9-5 9 {other_json}"),
        );
        hash.insert("garbage".into(), "x".into());
        let slots = current_slots(hash);
        let keys: Vec<_> = slots
            .iter()
            .map(|c| c.key.clone().unwrap_or_default())
            .collect();
        assert_eq!(keys, ["MSFT", "AAPL"]);
    }
}
