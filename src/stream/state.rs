//! One stream key's history and current state: plain data, no IO, no locks.
//!
//! - the **history**: a bounded log of encoded events, each frame encoded once and shared
//!   (`Bytes`) by all subscribers. It is also the fan-out queue: a subscriber is a sequence
//!   number into it (see [`Channel`](super::channel::Channel), which adds the lock and wakes).
//! - the **current state**: the latest event of every live slot (a snapshot source's
//!   document, or one item of an items source), in publication order, each with its content
//!   hash, so a new client receives the state as a compacted replay of the log, and a poller
//!   started later can carry on from it ([`State::tracker`]).
//! - the **state hash**: a sum (mod 2^128) of the content hashes of all live slots. Every
//!   event's `id` is this hash after the event, so ids depend only on content: a client can
//!   resume on any instance that has seen the same state.
//!
//! A `State` outlives its channel: when a stream key's poller stops, the hub parks the state
//! for the resume window ([`Resume`](super::resume::Resume)), and a channel created again for
//! the key starts from it, so a reconnect gets exactly the difference.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::json;

use super::delta::{Change, Tracker};
use super::sse::{self, Event};
use crate::config::{Mode, StreamConfig};

mod replica;

pub use replica::SharedChange;

/// Rough per-entry cost (the `Arc`, its map nodes, the id string) counted against the resume
/// memory budget on top of frame bytes.
const ENTRY_OVERHEAD: usize = 160;

/// A slot of the state: one source's document, or one item of an items source.
type Slot = (usize, Option<String>);

/// One encoded event in the log.
#[derive(Debug)]
struct Entry {
    /// Position in the key's publication order.
    seq: u64,
    /// The slot it updates; `None` for live-only notices (errors) that are never replayed.
    slot: Option<Slot>,
    /// Its `id:`, the state hash after it; `None` for notices.
    id: Option<String>,
    /// The content hash of the value it sets (0 for removals and notices), so a poller can
    /// resume diffing from the state without the documents.
    hash: u128,
    /// The encoded frame, shared by every subscriber.
    frame: Bytes,
}

/// The current state at one sequence number, encoded once on first use.
#[derive(Debug)]
pub struct FullState {
    /// The sequence number it is current at: a subscriber sent it continues from here.
    pub seq: u64,
    /// The live frames in publication order (shared, not copied).
    parts: Vec<Bytes>,
    /// The current state's id when the last live frame's id differs from it.
    closing_id: Option<String>,
    /// The frame, built by the first client that needs it, outside any lock.
    frame: OnceLock<Bytes>,
}

impl FullState {
    /// The current state as one compacted replay, ending on the current state's id.
    pub fn frame(&self) -> &Bytes {
        self.frame.get_or_init(|| {
            let size = self.parts.iter().map(Bytes::len).sum::<usize>();
            let mut out = BytesMut::with_capacity(size + 40);
            for part in &self.parts {
                out.put_slice(part);
            }
            if let Some(id) = &self.closing_id {
                // A frame with an id and no data sets `lastEventId` without dispatching.
                out.put_slice(b"id: ");
                out.put_slice(id.as_bytes());
                out.put_slice(b"\n\n");
            }
            out.freeze()
        })
    }

    /// Whether there is no state yet (nothing published).
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }
}

/// What a reconnecting client with a `Last-Event-ID` is owed.
pub enum Since {
    /// Its id is the current state's: nothing.
    UpToDate,
    /// Its id is in the history: these frames, the latest of each slot changed since.
    Frames(Vec<Bytes>),
    /// Its id is unknown or expired: a resync and the full state.
    Unknown,
}

/// History and current state of one stream key.
#[derive(Debug)]
pub struct State {
    /// Recent entries in publication order, bounded by count and bytes.
    entries: VecDeque<Arc<Entry>>,
    /// Sum of frame sizes in `entries`.
    bytes: usize,
    /// Sequence number the next entry will get.
    next_seq: u64,
    /// Seq of the latest entry of each slot (removals included while they are in the log).
    latest: HashMap<Slot, u64>,
    /// The current state: the latest entry of each live slot, by seq.
    live: BTreeMap<u64, Arc<Entry>>,
    /// Sum of live slots' content hashes; its hex form is the current event id.
    state_hash: u128,
    /// Most entries kept (`[sse] history_events`).
    history_events: usize,
    /// Most frame bytes kept (`[sse] history_bytes`); the newest entry always stays.
    history_bytes: usize,
}

impl State {
    /// An empty state with these history bounds.
    pub fn new(history_events: usize, history_bytes: usize) -> State {
        State {
            entries: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
            latest: HashMap::new(),
            live: BTreeMap::new(),
            state_hash: 0,
            history_events,
            history_bytes,
        }
    }

    /// Sequence number the next entry will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether nothing was ever published (no state, no history worth keeping).
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.latest.is_empty()
    }

    /// Encodes a source's changes of `route` as events, in order.
    pub fn publish(&mut self, route: &StreamConfig, source: usize, changes: Vec<Change>) {
        let Some(names) = Names::of(route, source) else {
            return;
        };
        for change in changes {
            self.state_hash = self.state_hash.wrapping_sub(change.old_hash);
            if let Some((hash, _)) = &change.new {
                self.state_hash = self.state_hash.wrapping_add(*hash);
            }
            let id = state_id(self.state_hash);
            let new = change
                .new
                .as_ref()
                .map(|(hash, json)| (*hash, json.as_str()));
            self.append(&names, (source, change.key), new, id);
        }
    }

    /// Appends the event setting `slot` to `new` (or removing it) with `id`, and makes it
    /// the slot's current entry. The state hash is the caller's to keep.
    fn append(&mut self, names: &Names, slot: Slot, new: Option<(u128, &str)>, id: String) {
        let (frame, hash) = names.frame(&slot, new, &id);
        let seq = self.next_seq;
        let entry = Arc::new(Entry {
            seq,
            slot: Some(slot.clone()),
            id: Some(id),
            hash,
            frame,
        });
        if let Some(old) = self.latest.insert(slot, seq) {
            self.live.remove(&old);
        }
        if hash != 0 {
            self.live.insert(seq, entry.clone());
        }
        self.push(entry);
    }

    /// Appends a live-only notice (an outage's event (`upstream_error`)), never replayed on resume.
    pub fn notice(&mut self, frame: Bytes) {
        let entry = Arc::new(Entry {
            seq: self.next_seq,
            slot: None,
            id: None,
            hash: 0,
            frame,
        });
        self.push(entry);
    }

    fn push(&mut self, entry: Arc<Entry>) {
        self.next_seq += 1;
        self.bytes += entry.frame.len();
        self.entries.push_back(entry);
        // The newest entry always stays, even when it alone is over the byte bound: an empty
        // log would make every subscriber look lagged.
        while self.entries.len() > 1
            && (self.entries.len() > self.history_events || self.bytes > self.history_bytes)
        {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.frame.len();
            // A removal stays in `latest` only while it can still be replayed.
            if let Some(slot) = &old.slot
                && !self.live.contains_key(&old.seq)
                && self.latest.get(slot) == Some(&old.seq)
            {
                self.latest.remove(slot);
            }
        }
    }

    /// The frame a subscriber at `seq` sends next: `Ok(None)` when it is up to date,
    /// [`Lagged`] when it fell off the front of the history (it must be resynced).
    pub fn frame_at(&self, seq: u64) -> Result<Option<Bytes>, Lagged> {
        let first = self.entries.front().map_or(self.next_seq, |e| e.seq);
        if seq < first {
            return Err(Lagged);
        }
        let index = (seq - first) as usize;
        Ok(self.entries.get(index).map(|e| e.frame.clone()))
    }

    /// The current state's parts, cheap to take (shared frames); encode with
    /// [`FullState::frame`] outside the lock that guards the state.
    pub fn full_state(&self) -> FullState {
        let current = state_id(self.state_hash);
        let last = self.live.values().next_back().and_then(|e| e.id.as_deref());
        // Each replayed frame keeps the id it was published with. When slots were removed
        // after the newest live one, that id names a state the client never had, and resuming
        // from it could skip an item that later came back; so end on the current state's id.
        let closing_id =
            (!self.live.is_empty() && last != Some(current.as_str())).then_some(current);
        FullState {
            seq: self.next_seq,
            parts: self.live.values().map(|e| e.frame.clone()).collect(),
            closing_id,
            frame: OnceLock::new(),
        }
    }

    /// What a client that last saw `id` is owed: exactly the difference when `id` is in the
    /// history (the latest event of every slot changed since, removals included).
    pub fn since(&self, id: &str) -> Since {
        if !self.live.is_empty() && id == state_id(self.state_hash) {
            return Since::UpToDate;
        }
        match self
            .entries
            .iter()
            .rposition(|e| e.id.as_deref() == Some(id))
        {
            Some(position) => Since::Frames(
                self.entries
                    .iter()
                    .skip(position + 1)
                    .filter(|e| self.is_latest(e))
                    .map(|e| e.frame.clone())
                    .collect(),
            ),
            None => Since::Unknown,
        }
    }

    /// Whether a log entry is still the latest for its slot (and so part of a difference).
    fn is_latest(&self, entry: &Entry) -> bool {
        entry
            .slot
            .as_ref()
            .is_some_and(|slot| self.latest.get(slot) == Some(&entry.seq))
    }

    /// A tracker for `source` of `route` that knows this state, so the first poll of a new
    /// poller publishes only what changed since (and ids continue from this state).
    pub fn tracker(&self, route: &StreamConfig, source: usize) -> Option<Tracker> {
        let spec = route.sources.get(source)?;
        let hashes = self
            .live
            .values()
            .filter_map(|e| e.slot.as_ref().map(|slot| (slot, e.hash)))
            .filter(|((s, _), _)| *s == source)
            .map(|((_, key), hash)| (key.clone(), hash));
        Some(Tracker::resume(spec.mode.clone(), &spec.event, hashes))
    }

    /// Approximate bytes held, for the resume memory budget: frames in the history, live
    /// frames that left it, and a fixed cost per entry and slot.
    pub fn memory(&self) -> usize {
        let first = self.entries.front().map_or(self.next_seq, |e| e.seq);
        let slot_cost = |slot: &Slot| ENTRY_OVERHEAD + slot.1.as_ref().map_or(0, String::len);
        let outside: usize = self
            .live
            .range(..first)
            .map(|(_, e)| e.frame.len() + ENTRY_OVERHEAD)
            .sum();
        let latest: usize = self.latest.keys().map(slot_cost).sum();
        self.bytes + self.entries.len() * ENTRY_OVERHEAD + outside + latest
    }

    #[cfg(test)]
    pub(crate) fn history_len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(crate) fn slots(&self) -> (usize, usize) {
        (self.latest.len(), self.live.len())
    }
}

/// A subscriber fell behind the history.
#[derive(Debug, PartialEq, Eq)]
pub struct Lagged;

/// Writes a resync event (named `name`, `[sse] resync_event`) with `reason`.
pub fn resync_into(out: &mut BytesMut, name: &str, reason: &str) {
    let data = json!({ "reason": reason }).to_string();
    sse::encode_into(
        out,
        &Event {
            id: None,
            event: Some(name),
            data: &data,
        },
    );
}

/// How one source's events are named and keyed.
struct Names<'a> {
    /// The source's event name.
    event: &'a str,
    /// `{event}_removed`, for removed items.
    removed: String,
    /// The items' key field, named in a removal's data.
    key_field: &'a str,
}

impl Names<'_> {
    fn of(route: &StreamConfig, source: usize) -> Option<Names<'_>> {
        let spec = route.sources.get(source)?;
        Some(Names {
            event: &spec.event,
            removed: format!("{}_removed", spec.event),
            key_field: match &spec.mode {
                Mode::Items { key, .. } => key.as_str(),
                Mode::Snapshot => "",
            },
        })
    }

    /// The encoded event setting `slot` to `new` (removing it when `None`), and the content
    /// hash it sets (0 for a removal).
    fn frame(&self, slot: &Slot, new: Option<(u128, &str)>, id: &str) -> (Bytes, u128) {
        match new {
            Some((hash, json)) => {
                let frame = sse::encode(&Event {
                    id: Some(id),
                    event: Some(self.event),
                    data: json,
                });
                (frame, hash)
            }
            None => {
                let data = json!({ self.key_field: slot.1.as_deref().unwrap_or_default() });
                let frame = sse::encode(&Event {
                    id: Some(id),
                    event: Some(&self.removed),
                    data: &data.to_string(),
                });
                (frame, 0)
            }
        }
    }
}

/// The `id:` of a state: its hash in hex.
pub fn state_id(hash: u128) -> String {
    format!("{hash:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An items route (`/items`, key `k`), for this module's tests and its children's.
    pub(super) fn route() -> StreamConfig {
        let mode = Mode::Items {
            pointer: "/items".into(),
            key: "k".into(),
        };
        let key = crate::stream::channel::StreamKey::for_tests(0, mode, vec![]);
        StreamConfig::clone(&key.route)
    }

    fn document(items: &[(&str, u32)]) -> Bytes {
        let list: Vec<_> = items.iter().map(|(k, v)| json!({"k": k, "v": v})).collect();
        Bytes::from(json!({ "items": list }).to_string())
    }

    fn text(parts: &[Bytes]) -> String {
        parts
            .iter()
            .map(|b| std::str::from_utf8(b).expect("utf-8"))
            .collect()
    }

    #[test]
    fn a_tracker_resumed_from_the_state_publishes_only_what_changed_since() {
        let route = route();
        let mut state = State::new(100, 1 << 20);
        let mut tracker = state.tracker(&route, 0).expect("source");
        let first = tracker
            .apply(&document(&[("a", 1), ("b", 1)]))
            .expect("valid");
        state.publish(&route, 0, first);
        let full = state.full_state();
        let id = std::str::from_utf8(full.frame())
            .expect("utf-8")
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("id: "))
            .expect("id")
            .to_owned();
        // The poller stops; a new one starts from the state alone.
        let mut again = state.tracker(&route, 0).expect("source");
        assert!(
            again
                .apply(&document(&[("b", 1), ("a", 1)]))
                .expect("valid")
                .is_empty(),
            "an unchanged document is no change"
        );
        let changes = again
            .apply(&document(&[("a", 2), ("b", 1)]))
            .expect("valid");
        assert_eq!(changes.len(), 1);
        state.publish(&route, 0, changes);
        match state.since(&id) {
            Since::Frames(frames) => {
                let sent = text(&frames);
                assert_eq!(sent.matches("event: item\n").count(), 1, "{sent}");
                assert!(sent.contains(r#""v":2"#), "{sent}");
            }
            _ => panic!("the id is in the history"),
        }
    }

    #[test]
    fn memory_counts_frames_and_entries() {
        let route = route();
        let mut state = State::new(2, 1 << 20);
        let empty = state.memory();
        let mut tracker = state.tracker(&route, 0).expect("source");
        for round in 0..10 {
            let key = format!("k{round}");
            let changes = tracker
                .apply(&document(&[("keep", 0), (key.as_str(), round)]))
                .expect("valid");
            state.publish(&route, 0, changes);
        }
        assert_eq!(state.history_len(), 2);
        let used = state.memory();
        assert!(used > empty + 2 * ENTRY_OVERHEAD, "{used}");
        assert!(
            used < 20 * ENTRY_OVERHEAD + 2_000,
            "bounded by the history and live slots: {used}"
        );
    }
}
