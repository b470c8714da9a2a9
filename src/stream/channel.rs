//! One stream key's state, history and fan-out.
//!
//! A channel is shared by every client of one stream key (route, parameters, user). It holds:
//! - the **log**: a bounded history of encoded events, each frame encoded once and shared
//!   (`Bytes`) by all subscribers. The log is also the fan-out queue: a subscriber is just a
//!   cursor into it, so a slow client costs no memory of its own; when its cursor falls off
//!   the front of the log it is skipped ahead to the current state with a `resync` event.
//! - the **current state**: the latest event of every live slot (a snapshot source's document,
//!   or one item of an items source), kept in publication order so a new client receives the
//!   state as a compacted replay of the log.
//! - the **state hash**: a sum (mod 2^128) of the content hashes of all live slots. Every
//!   event's `id` is this hash after the event, so ids depend only on content: a client can
//!   resume on any instance that has seen the same state.
//!
//! Resuming with `Last-Event-ID` sends exactly the difference: the log after the event with
//! that id, keeping only events that are still the latest for their slot. An id equal to the
//! current state sends nothing; an unknown or expired id gets `resync` and the full state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::Identity;
use super::delta::Change;
use super::sse::{self, Event, HEARTBEAT};
use crate::config::{Mode, StreamConfig};
use crate::ops::metrics::Metrics;

/// Which stream a channel serves; equal keys share one channel and one poller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// Index of the `[[stream]]` route.
    pub route: usize,
    /// The route's path parameter values.
    pub params: Vec<String>,
    /// The validated user on `auth = true` routes, so users never share data.
    pub user: Option<String>,
}

/// Where a channel is in its life, as seen by a client about to start.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Some source has not answered its first poll yet.
    Pending,
    /// Every source has answered at least once (with data or an error).
    Live,
    /// The origin refused the stream's resource; new clients get this answer as HTTP.
    Failed(Arc<FatalAnswer>),
}

/// An origin answer that ends a stream (401, 403, 404, 410).
#[derive(Debug)]
pub struct FatalAnswer {
    /// The origin's status.
    pub status: StatusCode,
    /// The origin's `detail`, or the status reason.
    pub detail: String,
    /// The origin's JSON body, relayed as is when there was one.
    pub body: Option<Bytes>,
}

/// Credentials of the subscribers attached to a channel.
#[derive(Default)]
struct Identities {
    /// By subscriber number, oldest first.
    attached: Vec<(u64, Identity)>,
    /// The last subscriber's, once all have left (used while the poller lingers).
    departed: Option<Identity>,
}

/// A slot of the state: one source's document, or one item of an items source.
type Slot = (usize, Option<String>);

/// One encoded event in the log.
#[derive(Debug)]
struct Entry {
    /// Position in the channel's publication order.
    seq: u64,
    /// The slot it updates; `None` for live-only notices (errors) that are never replayed.
    slot: Option<Slot>,
    /// Its `id:`, the state hash after it; `None` for notices.
    id: Option<String>,
    /// The encoded frame, shared by every subscriber.
    frame: Bytes,
}

/// What a subscriber gets from [`Channel::poll_next`].
pub enum Next {
    /// Bytes to send.
    Frame(Bytes),
    /// The last bytes to send, then close (fatal error or shutdown).
    End(Bytes),
}

/// A subscriber's position: the only per-client state.
#[derive(Debug, Default)]
pub struct Cursor {
    /// Sequence number of the next log entry to send.
    next: u64,
    /// Last heartbeat generation sent.
    heartbeat: u64,
    /// Wake epoch in which this subscriber's waker was registered (0 = never).
    registered: u64,
}

/// The mutable part, behind one short-held lock.
struct Log {
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
    /// Heartbeat generation; subscribers send a comment when theirs is older.
    heartbeat: u64,
    /// Tasks to wake on the next publication.
    wakers: Vec<Waker>,
    /// Incremented each time `wakers` is drained, so a subscriber registers once per epoch.
    wake_epoch: u64,
    /// Final frame: once set, subscribers send it after the log and close.
    end: Option<Bytes>,
    /// Which sources have answered at least once.
    answered: Vec<bool>,
    /// Each source's current outage notice, sent to clients who join during the outage.
    outages: Vec<Option<Bytes>>,
}

/// The shared state of one stream key.
pub struct Channel {
    /// The key this channel serves.
    pub key: StreamKey,
    /// The route's sources: event names, modes.
    pub route: Arc<StreamConfig>,
    /// History, state and parked subscribers.
    log: Mutex<Log>,
    /// Readiness for clients waiting to start.
    phase: watch::Sender<Phase>,
    /// Attached clients; changed only under the hub's lock when increasing.
    subscribers: AtomicUsize,
    /// Signalled when the last subscriber leaves.
    pub idle: Notify,
    /// Signalled when the origin refuses the stream.
    pub failed: Notify,
    /// The credentials of attached subscribers, for polls on `auth = true` routes.
    identities: Mutex<Identities>,
    /// Numbers subscribers, so each one's credentials leave with it.
    next_subscriber: AtomicU64,
    /// History bounds from `[sse]`.
    history_events: usize,
    history_bytes: usize,
    /// Resumes and resyncs are counted here; subscribers count what they send.
    pub metrics: Arc<Metrics>,
}

impl Channel {
    /// A channel with an empty state, waiting for its first poll.
    pub fn new(
        key: StreamKey,
        route: Arc<StreamConfig>,
        history_events: usize,
        history_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Channel {
        let sources = route.sources.len();
        Channel {
            key,
            route,
            log: Mutex::new(Log {
                entries: VecDeque::new(),
                bytes: 0,
                next_seq: 1,
                latest: HashMap::new(),
                live: BTreeMap::new(),
                state_hash: 0,
                heartbeat: 0,
                wakers: Vec::new(),
                wake_epoch: 1,
                end: None,
                answered: vec![false; sources],
                outages: vec![None; sources],
            }),
            phase: watch::Sender::new(Phase::Pending),
            subscribers: AtomicUsize::new(0),
            idle: Notify::new(),
            failed: Notify::new(),
            identities: Mutex::new(Identities::default()),
            next_subscriber: AtomicU64::new(0),
            history_events,
            history_bytes,
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave the log half-updated in a way that
        // matters more than losing the stream, so poisoning is ignored.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attaches a subscriber (called under the hub's lock) with its credentials; returns its
    /// number, to give to [`Channel::detach`].
    pub fn attach(&self, identity: Option<Identity>) -> u64 {
        self.subscribers.fetch_add(1, Ordering::SeqCst);
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        if let Some(identity) = identity {
            self.identities().attached.push((id, identity));
        }
        id
    }

    /// Detaches subscriber `id`, and its credentials with it; the last one out signals `idle`.
    pub fn detach(&self, id: u64) {
        {
            let mut identities = self.identities();
            if let Some(at) = identities.attached.iter().position(|(i, _)| *i == id) {
                let (_, identity) = identities.attached.remove(at);
                if identities.attached.is_empty() {
                    // Nobody left: keep polling (while lingering) as the last one did.
                    identities.departed = Some(identity);
                }
            }
        }
        if self.subscribers.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.idle.notify_one();
        }
    }

    fn identities(&self) -> MutexGuard<'_, Identities> {
        self.identities.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Attached subscribers now.
    pub fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::SeqCst)
    }

    /// The credentials to poll with: the newest attached subscriber's, so a token that left
    /// with its client is never used again while another client is attached.
    pub fn identity(&self) -> Option<Identity> {
        let identities = self.identities();
        identities
            .attached
            .last()
            .map(|(_, identity)| identity.clone())
            .or_else(|| identities.departed.clone())
    }

    /// A receiver of the channel's phase, for clients waiting to start.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Records that `source` has answered (data or error); the channel goes live when all have.
    pub fn answered(&self, source: usize) {
        let all = {
            let mut log = self.lock();
            match log.answered.get_mut(source) {
                Some(seen) if !*seen => *seen = true,
                _ => return,
            }
            log.answered.iter().all(|&a| a)
        };
        if all {
            self.phase.send_if_modified(|phase| {
                let pending = matches!(phase, Phase::Pending);
                if pending {
                    *phase = Phase::Live;
                }
                pending
            });
        }
    }

    /// Publishes a source's changes as events, in order.
    pub fn publish(&self, source: usize, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let spec = &self.route.sources[source];
        let removed_event = format!("{}_removed", spec.event);
        let key_field = match &spec.mode {
            Mode::Items { key, .. } => key.as_str(),
            Mode::Snapshot => "",
        };
        let wakers = {
            let mut log = self.lock();
            for change in changes {
                log.state_hash = log.state_hash.wrapping_sub(change.old_hash);
                let slot = (source, change.key);
                let (frame, removed) = match &change.new {
                    Some((hash, json)) => {
                        log.state_hash = log.state_hash.wrapping_add(*hash);
                        let id = state_id(log.state_hash);
                        let frame = sse::encode(&Event {
                            id: Some(&id),
                            event: Some(&spec.event),
                            data: json,
                        });
                        ((id, frame), false)
                    }
                    None => {
                        let id = state_id(log.state_hash);
                        let data = json!({ key_field: slot.1.as_deref().unwrap_or_default() });
                        let frame = sse::encode(&Event {
                            id: Some(&id),
                            event: Some(&removed_event),
                            data: &data.to_string(),
                        });
                        ((id, frame), true)
                    }
                };
                let seq = log.next_seq;
                let entry = Arc::new(Entry {
                    seq,
                    slot: Some(slot.clone()),
                    id: Some(frame.0),
                    frame: frame.1,
                });
                if let Some(old) = log.latest.insert(slot, seq) {
                    log.live.remove(&old);
                }
                if !removed {
                    log.live.insert(seq, entry.clone());
                }
                self.push(&mut log, entry);
            }
            self.drain_wakers(&mut log)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Reports that `source` is failing: an outage event (`upstream_error`) for current
    /// subscribers, and for anyone who joins until [`Channel::recovered`]. Never replayed on
    /// resume.
    pub fn outage(&self, source: usize, data: &str) {
        let frame = sse::encode(&Event {
            id: None,
            event: Some(&self.route.events.outage),
            data,
        });
        let wakers = {
            let mut log = self.lock();
            if let Some(outage) = log.outages.get_mut(source) {
                *outage = Some(frame.clone());
            }
            let entry = Arc::new(Entry {
                seq: log.next_seq,
                slot: None,
                id: None,
                frame,
            });
            self.push(&mut log, entry);
            self.drain_wakers(&mut log)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// `source` answers again: clients who join from now on are not told of the outage.
    pub fn recovered(&self, source: usize) {
        if let Some(outage) = self.lock().outages.get_mut(source) {
            *outage = None;
        }
    }

    /// Asks every subscriber to send a heartbeat comment.
    pub fn heartbeat(&self) {
        let wakers = {
            let mut log = self.lock();
            log.heartbeat += 1;
            self.drain_wakers(&mut log)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Ends the stream for every subscriber with `frame`, after what they have not yet sent.
    pub fn end(&self, frame: Bytes) {
        let wakers = {
            let mut log = self.lock();
            log.end.get_or_insert(frame);
            self.drain_wakers(&mut log)
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The origin refused the stream: end it with a refusal event (`stream_refused`), and
    /// answer new clients with the origin's status until the hub forgets the channel.
    pub fn fail(&self, answer: FatalAnswer) {
        let data = json!({ "status": answer.status.as_u16(), "detail": answer.detail }).to_string();
        self.end(sse::encode(&Event {
            id: None,
            event: Some(&self.route.events.refused),
            data: &data,
        }));
        self.phase.send_replace(Phase::Failed(Arc::new(answer)));
        self.failed.notify_one();
    }

    fn push(&self, log: &mut Log, entry: Arc<Entry>) {
        log.next_seq += 1;
        log.bytes += entry.frame.len();
        log.entries.push_back(entry);
        // The newest entry always stays, even when it alone is over the byte bound: an empty
        // log would make every subscriber look lagged.
        while log.entries.len() > 1
            && (log.entries.len() > self.history_events || log.bytes > self.history_bytes)
        {
            let Some(old) = log.entries.pop_front() else {
                break;
            };
            log.bytes -= old.frame.len();
            // A removal stays in `latest` only while it can still be replayed.
            if let Some(slot) = &old.slot
                && !log.live.contains_key(&old.seq)
                && log.latest.get(slot) == Some(&old.seq)
            {
                log.latest.remove(slot);
            }
        }
    }

    fn drain_wakers(&self, log: &mut Log) -> Vec<Waker> {
        log.wake_epoch += 1;
        let capacity = log.wakers.len();
        std::mem::replace(&mut log.wakers, Vec::with_capacity(capacity))
    }

    /// The first bytes of a new subscriber's stream and its cursor: `retry:`, then the full
    /// state, or the difference since `last_event_id`.
    pub fn start(&self, last_event_id: Option<&str>, retry_ms: u64) -> (Bytes, Cursor) {
        let log = self.lock();
        let mut out = BytesMut::new();
        sse::retry_into(&mut out, retry_ms);
        let before = out.len();
        match last_event_id {
            None => full_state(&log, &mut out),
            Some(id) if !log.live.is_empty() && id == state_id(log.state_hash) => {}
            Some(id) => match log
                .entries
                .iter()
                .rposition(|e| e.id.as_deref() == Some(id))
            {
                Some(position) => {
                    Metrics::inc(&self.metrics.resumes);
                    for entry in log.entries.iter().skip(position + 1) {
                        if is_latest(&log, entry) {
                            out.put_slice(&entry.frame);
                        }
                    }
                }
                None => {
                    Metrics::inc(&self.metrics.resyncs_unknown_id);
                    resync_into(&mut out, &self.route.events.resync, "unknown_last_event_id");
                    full_state(&log, &mut out);
                }
            },
        }
        for notice in log.outages.iter().flatten() {
            out.put_slice(notice);
        }
        if out.len() == before {
            let note = if log.live.is_empty() {
                "connected; waiting for the origin's first answer"
            } else {
                "connected; up to date"
            };
            sse::comment_into(&mut out, note);
        }
        let cursor = Cursor {
            next: log.next_seq,
            heartbeat: log.heartbeat,
            registered: 0,
        };
        (out.freeze(), cursor)
    }

    /// The next bytes for a subscriber, or `Pending` with its waker parked.
    pub fn poll_next(&self, cursor: &mut Cursor, cx: &mut Context<'_>) -> Poll<Next> {
        let mut log = self.lock();
        let first = log.entries.front().map_or(log.next_seq, |e| e.seq);
        if cursor.next < first {
            // Fell behind the history: skip to the current state.
            Metrics::inc(&self.metrics.resyncs_lagged);
            let mut out = BytesMut::new();
            resync_into(&mut out, &self.route.events.resync, "lagged");
            full_state(&log, &mut out);
            cursor.next = log.next_seq;
            return Poll::Ready(Next::Frame(out.freeze()));
        }
        if cursor.next < log.next_seq {
            let index = (cursor.next - first) as usize;
            cursor.next += 1;
            if let Some(entry) = log.entries.get(index) {
                return Poll::Ready(Next::Frame(entry.frame.clone()));
            }
        }
        if let Some(end) = &log.end {
            return Poll::Ready(Next::End(end.clone()));
        }
        if cursor.heartbeat < log.heartbeat {
            cursor.heartbeat = log.heartbeat;
            return Poll::Ready(Next::Frame(Bytes::from_static(HEARTBEAT)));
        }
        if cursor.registered != log.wake_epoch {
            cursor.registered = log.wake_epoch;
            log.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Whether a log entry is still the latest for its slot (and so part of a delta).
fn is_latest(log: &Log, entry: &Entry) -> bool {
    entry
        .slot
        .as_ref()
        .is_some_and(|slot| log.latest.get(slot) == Some(&entry.seq))
}

/// The current state as a compacted replay, ending on the current state's id.
fn full_state(log: &Log, out: &mut BytesMut) {
    for entry in log.live.values() {
        out.put_slice(&entry.frame);
    }
    // Each replayed frame keeps the id it was published with. When slots were removed after
    // the newest live one, that id names a state the client never had, and resuming from it
    // could skip an item that later came back; so end on the current state's id. A frame
    // with an id and no data sets `lastEventId` without dispatching an event.
    let current = state_id(log.state_hash);
    let last = log.live.values().next_back().and_then(|e| e.id.as_deref());
    if !log.live.is_empty() && last != Some(current.as_str()) {
        out.put_slice(b"id: ");
        out.put_slice(current.as_bytes());
        out.put_slice(b"\n\n");
    }
}

fn resync_into(out: &mut BytesMut, name: &str, reason: &str) {
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

/// The `id:` of a state: its hash in hex.
fn state_id(hash: u128) -> String {
    format!("{hash:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceConfig;
    use crate::http::path::{PathPattern, PollTemplate};
    use crate::stream::delta::Tracker;
    use std::task::Wake;
    use std::time::Duration;

    struct Flag;
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {}
    }

    fn channel(history: usize) -> (Channel, Tracker) {
        let path = PathPattern::parse("/s").expect("pattern");
        let mode = Mode::Items {
            pointer: "/items".into(),
            key: "k".into(),
        };
        let route = StreamConfig {
            index: 0,
            sources: vec![SourceConfig {
                poll: PollTemplate::parse("/p", &path, &[]).expect("template"),
                every: Duration::from_secs(1),
                event: "item".into(),
                mode: mode.clone(),
                headers: vec![],
                wait: None,
            }],
            path,
            auth: false,
            query: Default::default(),
            max_keys: 1,
            events: Default::default(),
        };
        let key = StreamKey {
            route: 0,
            params: vec![],
            user: None,
        };
        (
            Channel::new(key, Arc::new(route), history, 1 << 20, Arc::default()),
            Tracker::new(mode, "item"),
        )
    }

    fn poll_document(ch: &Channel, tracker: &mut Tracker, items: &[(&str, u32)]) {
        let list: Vec<_> = items.iter().map(|(k, v)| json!({"k": k, "v": v})).collect();
        let body = Bytes::from(json!({ "items": list }).to_string());
        ch.publish(0, tracker.apply(&body).expect("valid"));
    }

    fn drain(ch: &Channel, cursor: &mut Cursor) -> String {
        let waker = Waker::from(Arc::new(Flag));
        let mut cx = Context::from_waker(&waker);
        let mut out = String::new();
        while let Poll::Ready(Next::Frame(bytes)) = ch.poll_next(cursor, &mut cx) {
            out.push_str(std::str::from_utf8(&bytes).expect("utf-8"));
        }
        out
    }

    fn last_id(text: &str) -> String {
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("id: "))
            .expect("an id")
            .to_owned()
    }

    #[test]
    fn new_client_gets_state_and_then_changes() {
        let (ch, mut t) = channel(100);
        poll_document(&ch, &mut t, &[("a", 1), ("b", 1)]);
        let (first, mut cursor) = ch.start(None, 3000);
        let first = std::str::from_utf8(&first).expect("utf-8").to_owned();
        assert!(first.starts_with("retry: 3000\n"));
        assert!(first.contains(r#""k":"a""#) && first.contains(r#""k":"b""#));
        poll_document(&ch, &mut t, &[("a", 2)]);
        let next = drain(&ch, &mut cursor);
        assert!(
            next.contains("event: item\n") && next.contains(r#""v":2"#),
            "{next}"
        );
        assert!(
            next.contains("event: item_removed\ndata: {\"k\":\"b\"}"),
            "{next}"
        );
    }

    #[test]
    fn resume_sends_exactly_the_difference() {
        let (ch, mut t) = channel(100);
        poll_document(&ch, &mut t, &[("a", 1), ("b", 1), ("c", 1)]);
        let (first, _) = ch.start(None, 0);
        let id = last_id(std::str::from_utf8(&first).expect("utf-8"));
        poll_document(&ch, &mut t, &[("a", 2), ("b", 1), ("c", 1)]);
        poll_document(&ch, &mut t, &[("a", 3), ("b", 1)]);
        let (resumed, _) = ch.start(Some(&id), 0);
        let resumed = std::str::from_utf8(&resumed).expect("utf-8");
        assert!(
            !resumed.contains(r#""v":2"#),
            "superseded change is not resent: {resumed}"
        );
        assert_eq!(resumed.matches(r#""v":3"#).count(), 1);
        assert_eq!(resumed.matches("item_removed").count(), 1);
        assert!(
            !resumed.contains(r#""k":"b","v""#),
            "unchanged item is not resent"
        );

        let (up_to_date, _) = ch.start(Some(&last_id(resumed)), 0);
        assert!(
            std::str::from_utf8(&up_to_date)
                .expect("utf-8")
                .contains("up to date")
        );
    }

    #[test]
    fn unknown_id_gets_resync_and_full_state() {
        let (ch, mut t) = channel(100);
        poll_document(&ch, &mut t, &[("a", 1)]);
        let (bytes, _) = ch.start(Some("test-event-12345"), 0);
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        let resync = text.find("event: resync").expect("resync");
        let state = text.find(r#""k":"a""#).expect("state");
        assert!(resync < state);
    }

    #[test]
    fn ids_depend_only_on_content() {
        let (one, mut t1) = channel(100);
        let (two, mut t2) = channel(100);
        poll_document(&one, &mut t1, &[("a", 1)]);
        poll_document(&one, &mut t1, &[("a", 1), ("b", 2)]);
        poll_document(&two, &mut t2, &[("b", 2), ("a", 1)]);
        let id = |ch: &Channel| last_id(std::str::from_utf8(&ch.start(None, 0).0).expect("utf-8"));
        assert_eq!(id(&one), id(&two));
    }

    #[test]
    fn the_full_state_ends_on_the_current_id_so_a_readded_item_is_not_lost() {
        let (ch, mut t) = channel(100);
        poll_document(&ch, &mut t, &[("a", 1)]);
        poll_document(&ch, &mut t, &[("a", 1), ("b", 1)]);
        poll_document(&ch, &mut t, &[("b", 1)]);
        let (first, _) = ch.start(None, 0);
        let id = last_id(std::str::from_utf8(&first).expect("utf-8"));
        poll_document(&ch, &mut t, &[("a", 1), ("b", 1)]);
        let (resumed, _) = ch.start(Some(&id), 0);
        let resumed = std::str::from_utf8(&resumed).expect("utf-8");
        assert!(resumed.contains(r#""k":"a""#), "{resumed}");
    }

    #[test]
    fn a_frame_over_the_byte_bound_stays_and_nobody_lags() {
        let (ch, mut t) = channel(100);
        let big = Channel::new(ch.key.clone(), ch.route.clone(), 100, 64, Arc::default());
        poll_document(&big, &mut t, &[("a", 1)]);
        let (_, mut cursor) = big.start(None, 0);
        poll_document(&big, &mut t, &[("a", 2)]);
        let text = drain(&big, &mut cursor);
        assert!(!text.contains("lagged"), "{text}");
        assert!(text.contains(r#""v":2"#));
        assert_eq!(big.lock().entries.len(), 1);
        drop(ch);
    }

    #[test]
    fn a_subscriber_that_falls_behind_is_resynced() {
        let (ch, mut t) = channel(4);
        poll_document(&ch, &mut t, &[("a", 0)]);
        let (_, mut cursor) = ch.start(None, 0);
        for v in 1..20 {
            poll_document(&ch, &mut t, &[("a", v)]);
        }
        let text = drain(&ch, &mut cursor);
        assert!(
            text.starts_with("event: resync\ndata: {\"reason\":\"lagged\"}"),
            "{text}"
        );
        assert_eq!(text.matches("event: item\n").count(), 1);
        assert!(text.contains(r#""v":19"#));
    }

    #[test]
    fn history_is_bounded_and_removals_are_forgotten() {
        let (ch, mut t) = channel(8);
        for round in 0..100u32 {
            let key = format!("k{round}");
            poll_document(&ch, &mut t, &[(key.as_str(), round)]);
        }
        let log = ch.lock();
        assert!(log.entries.len() <= 8);
        assert!(log.latest.len() <= 9, "latest grew to {}", log.latest.len());
        assert_eq!(log.live.len(), 1);
    }

    #[test]
    fn polls_use_the_credentials_of_a_subscriber_still_attached() {
        let (ch, _) = channel(10);
        let who = |user: &str| Identity {
            user_id: "u".into(),
            authorization: http::HeaderValue::from_str(&format!("Bearer {user}")).expect("value"),
        };
        let a = ch.attach(Some(who("a")));
        let b = ch.attach(Some(who("b")));
        assert_eq!(
            ch.identity().map(|i| i.authorization),
            Some(who("b").authorization)
        );
        ch.detach(b);
        assert_eq!(
            ch.identity().map(|i| i.authorization),
            Some(who("a").authorization)
        );
        ch.detach(a);
        assert_eq!(
            ch.identity().map(|i| i.authorization),
            Some(who("a").authorization),
            "kept while lingering"
        );
        assert_eq!(ch.subscribers(), 0);
    }

    #[test]
    fn end_is_sent_after_pending_events() {
        let (ch, mut t) = channel(100);
        let (_, mut cursor) = ch.start(None, 0);
        poll_document(&ch, &mut t, &[("a", 1)]);
        ch.fail(FatalAnswer {
            status: StatusCode::NOT_FOUND,
            detail: "gone".into(),
            body: None,
        });
        let waker = Waker::from(Arc::new(Flag));
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            ch.poll_next(&mut cursor, &mut cx),
            Poll::Ready(Next::Frame(_))
        ));
        match ch.poll_next(&mut cursor, &mut cx) {
            Poll::Ready(Next::End(bytes)) => {
                assert!(
                    std::str::from_utf8(&bytes)
                        .expect("utf-8")
                        .contains("\"status\":404")
                )
            }
            _ => panic!("expected the end frame"),
        }
        assert!(matches!(*ch.phase().borrow(), Phase::Failed(_)));
    }
}
