//! One stream key's fan-out: the lock around its [`State`] and the wakes.
//!
//! A channel is shared by every client of one stream key (route, parameters, user). The
//! history and current state it guards live in [`state`](super::state); here are what only a
//! live key has: parked subscribers' wakers, the heartbeat generation, the end frame, which
//! sources have answered, outage notices, the subscribers' credentials, and the phase new
//! clients wait on. A subscriber is just a [`Cursor`] into the state's history, so a slow
//! client costs no memory of its own; when its cursor falls off the front of the history it
//! is skipped ahead to the current state with a `resync` event.
//!
//! Nothing costly happens under the lock: the full state a new, resyncing or lagged client
//! needs is one frame per sequence number ([`FullState`]), built once, outside the lock, by
//! the first client that needs it.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::StatusCode;
use serde_json::json;
use tokio::sync::{Notify, watch};

use super::Identity;
use super::delta::{Change, Tracker};
use super::relay::Parked;
use super::sse::{self, Event, HEARTBEAT};
use super::state::{FullState, Since, State, resync_into};
use crate::config::StreamConfig;
use crate::ops::metrics::Metrics;

mod shared;

/// Which stream a channel serves; equal keys share one channel and one poller.
#[derive(Debug, Clone)]
pub struct StreamKey {
    /// The `[[stream]]` route; keys compare by its position in the file.
    pub route: Arc<StreamConfig>,
    /// The route's path parameter values, then its declared query parameters' canonical values.
    pub params: Vec<String>,
    /// The validated user on `auth = true` routes, so users never share data.
    pub user: Option<String>,
}

impl PartialEq for StreamKey {
    fn eq(&self, other: &StreamKey) -> bool {
        self.route.index == other.route.index
            && self.params == other.params
            && self.user == other.user
    }
}

impl Eq for StreamKey {}

impl Hash for StreamKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.route.index.hash(state);
        self.params.hash(state);
        self.user.hash(state);
    }
}

#[cfg(test)]
impl StreamKey {
    /// A key on a bare route at `index` (`/s/{id}`, one source polling `/p/{id}` in `mode`),
    /// for the stream layer's unit tests.
    pub(crate) fn for_tests(index: usize, mode: crate::config::Mode, params: Vec<String>) -> Self {
        use crate::config::SourceConfig;
        use crate::http::path::{PathPattern, PollTemplate};
        let path = PathPattern::parse("/s/{id}").expect("pattern");
        let route = StreamConfig {
            index,
            sources: vec![SourceConfig {
                poll: PollTemplate::parse("/p/{id}", &path, &[]).expect("template"),
                every: std::time::Duration::from_secs(1),
                event: "item".into(),
                mode,
                headers: vec![],
                wait: None,
            }],
            path,
            auth: false,
            query: Default::default(),
            max_keys: 1,
            events: Default::default(),
        };
        StreamKey {
            route: Arc::new(route),
            params,
            user: None,
        }
    }
}

impl StreamKey {
    /// Approximate bytes the key holds, for memory budgets.
    pub fn memory(&self) -> usize {
        let params: usize = self.params.iter().map(|p| p.len() + 24).sum();
        64 + params + self.user.as_ref().map_or(0, String::len)
    }
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
struct Inner {
    /// History and current state; taken out when the channel retires, to be parked.
    state: State,
    /// The full state at the latest sequence number a client asked for.
    full: Option<Arc<FullState>>,
    /// Heartbeat generation; subscribers send a comment when theirs is older.
    heartbeat: u64,
    /// Tasks to wake on the next publication.
    wakers: Parked,
    /// Incremented each time `wakers` is drained, so a subscriber registers once per epoch.
    wake_epoch: u64,
    /// Final frame: once set, subscribers send it after the log and close.
    end: Option<Bytes>,
    /// Which sources have answered at least once.
    answered: Vec<bool>,
    /// Each source's current outage notice, sent to clients who join during the outage.
    outages: Vec<Option<Bytes>>,
    /// Whether a subscriber has started (from then on the state is only ever appended to).
    started: bool,
}

impl Inner {
    /// The full state at the current sequence number: the cached one, or a new one (its
    /// frame is built later, outside the lock).
    fn full_state(&mut self) -> Arc<FullState> {
        match &self.full {
            Some(full) if full.seq == self.state.next_seq() => full.clone(),
            _ => {
                let full = Arc::new(self.state.full_state());
                self.full = Some(full.clone());
                full
            }
        }
    }

    fn drain_wakers(&mut self) -> Parked {
        self.wake_epoch += 1;
        self.wakers.take()
    }
}

/// How a new subscriber's stream begins, decided under the lock and written outside it.
enum Opening {
    /// The full state (and a `resync` first when the client's id was unknown).
    Full {
        /// The state.
        state: Arc<FullState>,
        /// The client's `Last-Event-ID` was unknown or expired.
        resync: bool,
    },
    /// Exactly the difference since the client's id (nothing when it is up to date).
    Since(Vec<Bytes>),
}

/// The shared state of one stream key.
pub struct Channel {
    /// The key this channel serves (and its route: sources, event names, modes).
    pub key: StreamKey,
    /// History, state and parked subscribers.
    inner: Mutex<Inner>,
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
    /// Resumes and resyncs are counted here; subscribers count what they send.
    pub metrics: Arc<Metrics>,
}

impl Channel {
    /// A channel serving `key` from `state` (empty, or kept from an earlier poller), waiting
    /// for its first poll.
    pub fn new(key: StreamKey, state: State, metrics: Arc<Metrics>) -> Channel {
        let sources = key.route.sources.len();
        Channel {
            key,
            inner: Mutex::new(Inner {
                state,
                full: None,
                heartbeat: 0,
                wakers: Parked::default(),
                wake_epoch: 1,
                end: None,
                answered: vec![false; sources],
                outages: vec![None; sources],
                started: false,
            }),
            phase: watch::Sender::new(Phase::Pending),
            subscribers: AtomicUsize::new(0),
            idle: Notify::new(),
            failed: Notify::new(),
            identities: Mutex::new(Identities::default()),
            next_subscriber: AtomicU64::new(0),
            metrics,
        }
    }

    /// The route this channel serves.
    pub fn route(&self) -> &Arc<StreamConfig> {
        &self.key.route
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the log half-updated in a way that
        // matters more than losing the stream, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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

    /// The origin's refusal, once it refused the stream.
    pub fn refusal(&self) -> Option<Arc<FatalAnswer>> {
        match &*self.phase.borrow() {
            Phase::Failed(answer) => Some(answer.clone()),
            _ => None,
        }
    }

    /// A tracker for `source` that carries on from the channel's state, for its poller.
    pub fn tracker(&self, source: usize) -> Option<Tracker> {
        self.lock().state.tracker(&self.key.route, source)
    }

    /// Takes the history and current state out (the channel is retiring), to be kept for
    /// reconnects; the channel is left empty.
    pub fn take_state(&self) -> State {
        let mut inner = self.lock();
        inner.full = None;
        // A poll still finishing before its task is aborted publishes into an empty log.
        std::mem::replace(&mut inner.state, State::new(1, 0))
    }

    /// Records that `source` has answered (data or error); the channel goes live when all have.
    pub fn answered(&self, source: usize) {
        let all = {
            let mut inner = self.lock();
            match inner.answered.get_mut(source) {
                Some(seen) if !*seen => *seen = true,
                _ => return,
            }
            inner.answered.iter().all(|&a| a)
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
        let wakers = {
            let mut inner = self.lock();
            inner.state.publish(&self.key.route, source, changes);
            inner.drain_wakers()
        };
        wakers.wake();
    }

    /// Reports that `source` is failing: an outage event (`upstream_error`) for current
    /// subscribers, and for anyone who joins until [`Channel::recovered`]. Never replayed on
    /// resume.
    pub fn outage(&self, source: usize, data: &str) {
        let frame = sse::encode(&Event {
            id: None,
            event: Some(&self.key.route.events.outage),
            data,
        });
        let wakers = {
            let mut inner = self.lock();
            if let Some(outage) = inner.outages.get_mut(source) {
                *outage = Some(frame.clone());
            }
            inner.state.notice(frame);
            inner.drain_wakers()
        };
        wakers.wake();
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
            let mut inner = self.lock();
            inner.heartbeat += 1;
            inner.drain_wakers()
        };
        wakers.wake();
    }

    /// Ends the stream for every subscriber with `frame`, after what they have not yet sent.
    pub fn end(&self, frame: Bytes) {
        let wakers = {
            let mut inner = self.lock();
            inner.end.get_or_insert(frame);
            inner.drain_wakers()
        };
        wakers.wake();
    }

    /// The origin refused the stream: end it with a refusal event (`stream_refused`), and answer new clients
    /// with the origin's status (the hub then remembers the refusal instead of the channel).
    pub fn fail(&self, answer: FatalAnswer) {
        let data = json!({ "status": answer.status.as_u16(), "detail": answer.detail }).to_string();
        let frame = sse::encode(&Event {
            id: None,
            event: Some(&self.key.route.events.refused),
            data: &data,
        });
        // The phase first: a subscriber that sees the end and reconnects at once, while the
        // channel is still in the hub, must find the refusal, not a stream that ends.
        self.phase.send_replace(Phase::Failed(Arc::new(answer)));
        self.end(frame);
        self.failed.notify_one();
    }

    /// The first bytes of a new subscriber's stream and its cursor: `retry:`, then the full
    /// state, or the difference since `last_event_id`.
    pub fn start(&self, last_event_id: Option<&str>, retry_ms: u64) -> (Bytes, Cursor) {
        let (opening, outages, cursor) = {
            let mut inner = self.lock();
            inner.started = true;
            let opening = match last_event_id.map(|id| inner.state.since(id)) {
                None => Opening::Full {
                    state: inner.full_state(),
                    resync: false,
                },
                Some(Since::UpToDate) => Opening::Since(Vec::new()),
                Some(Since::Frames(frames)) => {
                    Metrics::inc(&self.metrics.resumes);
                    Opening::Since(frames)
                }
                Some(Since::Unknown) => {
                    Metrics::inc(&self.metrics.resyncs_unknown_id);
                    Opening::Full {
                        state: inner.full_state(),
                        resync: true,
                    }
                }
            };
            let outages: Vec<Bytes> = inner.outages.iter().flatten().cloned().collect();
            let cursor = Cursor {
                next: inner.state.next_seq(),
                heartbeat: inner.heartbeat,
                registered: 0,
            };
            (opening, outages, cursor)
        };
        let mut out = BytesMut::new();
        sse::retry_into(&mut out, retry_ms);
        let before = out.len();
        let mut waiting = false;
        match opening {
            Opening::Full { state, resync } => {
                if resync {
                    resync_into(
                        &mut out,
                        &self.key.route.events.resync,
                        "unknown_last_event_id",
                    );
                }
                waiting = state.is_empty();
                out.put_slice(state.frame());
            }
            Opening::Since(frames) => frames.iter().for_each(|f| out.put_slice(f)),
        }
        for notice in &outages {
            out.put_slice(notice);
        }
        if out.len() == before {
            let note = if waiting {
                "connected; waiting for the origin's first answer"
            } else {
                "connected; up to date"
            };
            sse::comment_into(&mut out, note);
        }
        (out.freeze(), cursor)
    }

    /// The next bytes for a subscriber, or `Pending` with its waker parked.
    pub fn poll_next(&self, cursor: &mut Cursor, cx: &mut Context<'_>) -> Poll<Next> {
        let lagged = {
            let mut inner = self.lock();
            match inner.state.frame_at(cursor.next) {
                Err(_) => {
                    let full = inner.full_state();
                    cursor.next = full.seq;
                    full
                }
                Ok(Some(frame)) => {
                    cursor.next += 1;
                    return Poll::Ready(Next::Frame(frame));
                }
                Ok(None) => {
                    if let Some(end) = &inner.end {
                        return Poll::Ready(Next::End(end.clone()));
                    }
                    if cursor.heartbeat < inner.heartbeat {
                        cursor.heartbeat = inner.heartbeat;
                        return Poll::Ready(Next::Frame(Bytes::from_static(HEARTBEAT)));
                    }
                    if cursor.registered != inner.wake_epoch {
                        cursor.registered = inner.wake_epoch;
                        inner.wakers.push(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        };
        // Fell behind the history: skip to the current state, built outside the lock.
        Metrics::inc(&self.metrics.resyncs_lagged);
        let mut out = BytesMut::new();
        resync_into(&mut out, &self.key.route.events.resync, "lagged");
        out.put_slice(lagged.frame());
        Poll::Ready(Next::Frame(out.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use std::task::{Wake, Waker};

    struct Flag;
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {}
    }

    fn channel(history: usize) -> (Channel, Tracker) {
        sized(history, 1 << 20)
    }

    fn sized(history: usize, bytes: usize) -> (Channel, Tracker) {
        let mode = Mode::Items {
            pointer: "/items".into(),
            key: "k".into(),
        };
        let key = StreamKey::for_tests(0, mode.clone(), vec![]);
        (
            Channel::new(key, State::new(history, bytes), Arc::default()),
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
    fn the_full_state_is_built_once_per_sequence_number() {
        let (ch, mut t) = channel(100);
        poll_document(&ch, &mut t, &[("a", 1), ("b", 1)]);
        let cached = |ch: &Channel| ch.lock().full.clone().expect("cached");
        let (one, _) = ch.start(None, 0);
        let first = cached(&ch);
        let (two, _) = ch.start(Some("unknown"), 0);
        assert!(Arc::ptr_eq(&first, &cached(&ch)), "one frame per seq");
        let state = std::str::from_utf8(first.frame()).expect("utf-8");
        assert!(std::str::from_utf8(&one).expect("utf-8").ends_with(state));
        assert!(std::str::from_utf8(&two).expect("utf-8").ends_with(state));
        poll_document(&ch, &mut t, &[("a", 2), ("b", 1)]);
        let (three, _) = ch.start(None, 0);
        assert!(!Arc::ptr_eq(&first, &cached(&ch)), "a new seq, a new frame");
        assert!(
            std::str::from_utf8(&three)
                .expect("utf-8")
                .contains(r#""v":2"#)
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
        let (big, mut t) = sized(100, 64);
        poll_document(&big, &mut t, &[("a", 1)]);
        let (_, mut cursor) = big.start(None, 0);
        poll_document(&big, &mut t, &[("a", 2)]);
        let text = drain(&big, &mut cursor);
        assert!(!text.contains("lagged"), "{text}");
        assert!(text.contains(r#""v":2"#));
        assert_eq!(big.lock().state.history_len(), 1);
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
        let inner = ch.lock();
        let (latest, live) = inner.state.slots();
        assert!(inner.state.history_len() <= 8);
        assert!(latest <= 9, "latest grew to {latest}");
        assert_eq!(live, 1);
    }

    #[test]
    fn polls_use_the_credentials_of_a_subscriber_still_attached() {
        let (ch, _) = channel(10);
        let who = |user: &str| Identity {
            user_id: "u".into(),
            user_header: http::HeaderName::from_static("x-edge-user"),
            credential: (
                http::header::AUTHORIZATION,
                http::HeaderValue::from_str(&format!("Bearer {user}")).expect("value"),
            ),
        };
        let a = ch.attach(Some(who("a")));
        let b = ch.attach(Some(who("b")));
        assert_eq!(
            ch.identity().map(|i| i.credential),
            Some(who("b").credential)
        );
        ch.detach(b);
        assert_eq!(
            ch.identity().map(|i| i.credential),
            Some(who("a").credential)
        );
        ch.detach(a);
        assert_eq!(
            ch.identity().map(|i| i.credential),
            Some(who("a").credential),
            "kept while lingering"
        );
        assert_eq!(ch.subscribers(), 0);
    }

    /// A waker that notes, when woken, whether the channel's refusal could already be seen.
    struct SeesRefusal {
        phase: watch::Receiver<Phase>,
        refused_when_woken: std::sync::Mutex<Option<bool>>,
    }
    impl Wake for SeesRefusal {
        fn wake(self: Arc<Self>) {
            let refused = matches!(*self.phase.borrow(), Phase::Failed(_));
            *self.refused_when_woken.lock().expect("not poisoned") = Some(refused);
        }
    }

    #[test]
    fn a_subscriber_woken_by_a_refusal_finds_the_refusal_when_it_reconnects() {
        let (ch, _) = channel(100);
        let (_, mut cursor) = ch.start(None, 0);
        let seen = Arc::new(SeesRefusal {
            phase: ch.phase(),
            refused_when_woken: std::sync::Mutex::new(None),
        });
        let waker = Waker::from(seen.clone());
        assert!(
            ch.poll_next(&mut cursor, &mut Context::from_waker(&waker))
                .is_pending()
        );
        ch.fail(FatalAnswer {
            status: StatusCode::NOT_FOUND,
            detail: "gone".into(),
            body: None,
        });
        assert_eq!(
            *seen.refused_when_woken.lock().expect("not poisoned"),
            Some(true),
            "woken by the end, the phase already says refused"
        );
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
