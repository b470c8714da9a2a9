//! A channel's life in the cluster. The channel's supervisor runs [`drive`] instead of
//! pollers; it takes one of three roles in turn, for as long as the channel lives:
//!
//! - **hold**: this instance has the key's lease: its pollers publish through Redis
//!   ([`Holding`]); the lease is renewed every third of its life.
//! - **follow**: another instance holds it: apply what it publishes, and try to take the
//!   lease every quarter of its life (it is free again within one lease of its holder dying).
//! - **alone**: Redis cannot be reached: poll as a single instance would, and check every
//!   half lease whether Redis is back.
//!
//! Each role starts from Redis' snapshot of the key, so an instance that comes (back) to a key
//! carries on from the cluster's state and history rather than its own.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::task::JoinSet;

use super::Cluster;
use super::holding::Holding;
use super::names::Names;
use super::scripts::Snapshot;
use super::wire::{Notice, Record, current_slots, slot_field};
use crate::stream::channel::{Channel, FatalAnswer};
use crate::stream::delta::Tracker;
use crate::stream::poller::{self, PollContext, Sink};
use crate::stream::state::{SharedChange, State};

/// Shortest time between two roles, so a flapping Redis cannot spin a channel's task.
const MIN_ROLE: Duration = Duration::from_millis(100);

/// The key's state as Redis keeps it.
struct Shared {
    /// The live slots, in publication order.
    current: Vec<SharedChange>,
    /// The latest changes, oldest first.
    history: Vec<SharedChange>,
    /// The newest entry's id: following starts after it.
    last: String,
}

impl Shared {
    fn from(snapshot: Snapshot) -> Shared {
        let (state, entries) = snapshot;
        let last = entries
            .first()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone());
        let history = entries
            .into_iter()
            .rev()
            .filter_map(|(_, fields)| serde_json::from_str::<Notice>(fields.get("b")?).ok())
            .flat_map(|notice| notice.changes())
            .collect();
        Shared {
            current: current_slots(state),
            history,
            last,
        }
    }

    /// Whether Redis keeps nothing for the key (new, or expired).
    fn is_empty(&self) -> bool {
        self.current.is_empty() && self.history.is_empty()
    }

    /// The sum of the live slots' hashes: the state's id, as a number.
    fn hash(&self) -> u128 {
        self.current
            .iter()
            .filter_map(|c| c.new.as_ref())
            .fold(0u128, |sum, (hash, _)| sum.wrapping_add(*hash))
    }

    /// Makes `channel` carry on from this: a new channel takes the state and history whole
    /// (so any client's id in it resumes exactly); one already serving converges on it.
    fn adopt(&self, cluster: &Cluster, channel: &Channel) {
        if self.is_empty() {
            return;
        }
        let state = State::rebuild(
            channel.route(),
            cluster.history_events,
            cluster.history_bytes,
            &self.current,
            &self.history,
        );
        if !channel.install(state, &self.current) {
            Metrics::inc(&cluster.stats().converged);
        }
    }
}

use crate::ops::metrics::Metrics;

/// Gives a lease up when its holder stops (the channel retired, or the role changed).
struct Held {
    cluster: Arc<Cluster>,
    names: Names,
    token: String,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.cluster
            .stats()
            .leases_held
            .fetch_sub(1, Ordering::Relaxed);
        let (cluster, names, token) = (
            self.cluster.clone(),
            self.names.clone(),
            std::mem::take(&mut self.token),
        );
        // A task, since drop cannot wait; when the runtime is already gone, the lease
        // expires by itself within `lease_ms`.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { cluster.release(&names, &token).await });
        }
    }
}

/// Runs `channel`'s part in the cluster until the supervisor aborts it.
pub async fn drive(cluster: Arc<Cluster>, polling: Arc<PollContext>, channel: Arc<Channel>) {
    let names = cluster.names(&channel.key);
    let mut taken: Option<String> = None;
    loop {
        let started = tokio::time::Instant::now();
        let lease = match taken.take() {
            Some(token) => Ok(Some(token)),
            None => cluster.acquire(&names).await,
        };
        match lease {
            Ok(Some(token)) => hold(&cluster, &polling, &channel, &names, token).await,
            Ok(None) => taken = follow(&cluster, &channel, &names).await,
            Err(_) => alone(&cluster, &polling, &channel).await,
        }
        tokio::time::sleep_until(started + MIN_ROLE).await;
    }
}

/// Polls for the cluster until the lease is lost or Redis fails.
async fn hold(
    cluster: &Arc<Cluster>,
    polling: &Arc<PollContext>,
    channel: &Arc<Channel>,
    names: &Names,
    token: String,
) {
    cluster.stats().leases_held.fetch_add(1, Ordering::Relaxed);
    let held = Held {
        cluster: cluster.clone(),
        names: names.clone(),
        token,
    };
    let Ok(snapshot) = cluster.snapshot(names).await else {
        return;
    };
    let mut shared = Shared::from(snapshot);
    shared.adopt(cluster, channel);
    if shared.is_empty() {
        // Redis lost the key (restarted, or it expired) while this instance has a state:
        // write it whole first, so no follower converges on a partial one.
        match seed(cluster, names, &held.token, channel).await {
            Ok(Some(current)) => shared.current = current,
            Ok(None) => return,
            Err(_) => return,
        }
    }
    let unchecked = channel.state_id() != crate::stream::state::state_id(shared.hash());
    let holding = Arc::new(Holding::new(
        cluster.clone(),
        names.clone(),
        held.token.clone(),
        shared.hash(),
        unchecked,
    ));
    let mut pollers = JoinSet::new();
    for (source, spec) in channel.route().sources.iter().enumerate() {
        // Diff against what Redis holds: the changes published are the cluster's.
        let hashes = shared
            .current
            .iter()
            .filter(|c| c.source == source)
            .filter_map(|c| Some((c.key.clone(), c.new.as_ref()?.0)));
        let tracker = Tracker::resume(spec.mode.clone(), &spec.event, hashes);
        let sink = Sink::Shared(holding.clone());
        pollers.spawn(poller::run(
            polling.clone(),
            channel.clone(),
            source,
            tracker,
            sink,
        ));
    }
    let every = cluster.lease() / 3;
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = renew.tick() => match cluster.renew(names, &held.token).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(route = %channel.route().path, "cluster: lease lost; following");
                    return;
                }
                Err(_) => return,
            },
            _ = holding.diverged.notified() => {
                if let Ok(snapshot) = cluster.snapshot(names).await {
                    channel.converge(&Shared::from(snapshot).current);
                    Metrics::inc(&cluster.stats().converged);
                }
            }
            _ = holding.ended.notified() => return,
        }
    }
}

/// Writes `channel`'s whole state to Redis under `token` (nothing when it is empty); the
/// slots written, or `None` when the lease was lost meanwhile.
async fn seed(
    cluster: &Cluster,
    names: &Names,
    token: &str,
    channel: &Channel,
) -> redis::RedisResult<Option<Vec<SharedChange>>> {
    let current = channel.seed();
    if current.is_empty() {
        return Ok(Some(current));
    }
    let records: Vec<(usize, Record)> = current.iter().map(|c| (c.source, Record::of(c))).collect();
    let slots: Vec<(String, String)> = records
        .iter()
        .map(|(source, record)| {
            let value = serde_json::to_string(record).unwrap_or_default();
            (slot_field(*source, &record.k), value)
        })
        .collect();
    let notice = serde_json::to_string(&Notice::Seed { c: records }).unwrap_or_default();
    let published = cluster.publish(names, token, &notice, &slots).await?;
    Ok(published.map(|_| current))
}

/// Applies what the holder publishes until the lease is free (then returns its token, taken)
/// or Redis fails.
async fn follow(cluster: &Arc<Cluster>, channel: &Arc<Channel>, names: &Names) -> Option<String> {
    let shared = Shared::from(cluster.snapshot(names).await.ok()?);
    shared.adopt(cluster, channel);
    if !shared.is_empty() {
        channel.all_answered();
    }
    let mut following = cluster.follow(names, shared.last.clone()).await;
    let every = cluster.lease() / 4;
    let jitter = Duration::from_millis(fastrand::u64(0..=every.as_millis() as u64 / 2));
    let mut attempt = tokio::time::interval_at(tokio::time::Instant::now() + every + jitter, every);
    loop {
        tokio::select! {
            arrival = following.arrivals.recv() => {
                // `None`: this follower fell behind or Redis was lost: start over.
                let arrival = arrival?;
                if !apply(cluster, channel, arrival.notice) {
                    // Drifted (an entry was missed): converge, and read on from the snapshot.
                    drop(following);
                    let shared = Shared::from(cluster.snapshot(names).await.ok()?);
                    channel.converge(&shared.current);
                    Metrics::inc(&cluster.stats().converged);
                    following = cluster.follow(names, shared.last).await;
                }
            }
            _ = attempt.tick() => match cluster.acquire(names).await {
                Ok(Some(token)) => {
                    tracing::info!(route = %channel.route().path, "cluster: took over polling a stream key");
                    return Some(token);
                }
                Ok(None) => {}
                Err(_) => return None,
            },
        }
    }
}

/// Applies one notice from the holder; `false` when this channel's state drifted from it.
fn apply(cluster: &Cluster, channel: &Channel, notice: Notice) -> bool {
    match notice {
        Notice::Changes { .. } | Notice::Seed { .. } => {
            let sent = match &notice {
                Notice::Changes { c, .. } => c.len(),
                Notice::Seed { c } => c.len(),
                _ => 0,
            };
            let changes = notice.changes();
            Metrics::inc(&cluster.stats().applied);
            // Only the state after the last change has an id to check: a seed's earlier ids
            // leave out the slots of sources it writes later.
            let mut consistent = changes.len() == sent;
            for group in changes.chunk_by(|a, b| a.source == b.source) {
                let source = group[0].source;
                consistent = channel.apply_shared(source, group) && changes.len() == sent;
                channel.answered(source);
            }
            consistent
        }
        Notice::Outage { s, data } => {
            channel.outage(s, &data);
            channel.answered(s);
            true
        }
        Notice::Recovered { s } => {
            channel.recovered(s);
            true
        }
        Notice::Refused {
            status,
            detail,
            body,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN);
            channel.fail(FatalAnswer {
                status,
                detail,
                body: body.map(Bytes::from),
            });
            true
        }
    }
}

/// Polls as a single instance until Redis answers again.
async fn alone(cluster: &Arc<Cluster>, polling: &Arc<PollContext>, channel: &Arc<Channel>) {
    Metrics::inc(&cluster.stats().fallbacks);
    let mut pollers = JoinSet::new();
    for source in 0..channel.route().sources.len() {
        if let Some(tracker) = channel.tracker(source) {
            pollers.spawn(poller::run(
                polling.clone(),
                channel.clone(),
                source,
                tracker,
                Sink::Local,
            ));
        }
    }
    loop {
        tokio::time::sleep(cluster.lease() / 2).await;
        if cluster.ping().await {
            return;
        }
    }
}
