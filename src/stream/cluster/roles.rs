//! A channel's life in the cluster. The channel's supervisor runs [`drive`] instead of
//! pollers; it takes one of three roles in turn, for as long as the channel lives:
//!
//! - **hold**: this instance has the key's lease. It first makes Redis hold what its clients
//!   were sent (a new channel instead starts from Redis' state), then its pollers publish
//!   through Redis ([`Holding`]); the lease is renewed every third of its life.
//! - **follow**: another instance holds it: apply what it publishes, and try to take the
//!   lease every quarter of its life (it is free again within one lease of its holder dying).
//! - **alone**: Redis failed: poll as a single instance would, and check, less often after
//!   each failure in a row, whether Redis is back.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use tokio::task::JoinSet;

use super::Cluster;
use super::holding::{Holding, Outcome, overwrite};
use super::names::Names;
use super::snapshot::Shared;
use super::wire::Notice;
use crate::ops::metrics::Metrics;
use crate::stream::channel::{Channel, FatalAnswer};
use crate::stream::poller::{self, PollContext, Sink};
use crate::stream::state::state_id;

/// Shortest time between two roles, so a flapping Redis cannot spin a channel's task.
const MIN_ROLE: Duration = Duration::from_millis(100);
/// Longest wait between two checks whether Redis is back.
const MAX_ALONE: Duration = Duration::from_secs(30);

/// How a role ended.
enum End {
    /// The lease was lost, or its holder let it go: take a role again.
    Again,
    /// Redis failed: poll alone for a while.
    Trouble,
    /// The lease was taken while following: hold it.
    Taken(String),
}

/// A held lease, given up when its holder stops.
struct Held {
    /// Redis.
    cluster: Arc<Cluster>,
    /// The key's Redis keys.
    names: Names,
    /// The lease's token; empty once released.
    token: String,
}

impl Held {
    fn new(cluster: &Arc<Cluster>, names: &Names, token: String) -> Held {
        cluster.stats().leases_held.fetch_add(1, Ordering::Relaxed);
        Held {
            cluster: cluster.clone(),
            names: names.clone(),
            token,
        }
    }

    /// Gives the lease up now, so the next role does not find it still taken (by itself).
    async fn release(mut self) {
        let token = std::mem::take(&mut self.token);
        self.cluster.release(&self.names, &token).await;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.cluster
            .stats()
            .leases_held
            .fetch_sub(1, Ordering::Relaxed);
        if !self.token.is_empty() {
            // The channel retired mid-role (the task was aborted, as on shutdown): release
            // from a task, since drop cannot wait, counted until answered so that shutdown
            // can wait for it; without a runtime the lease expires within `lease_ms`.
            let (cluster, names, token) = (
                self.cluster.clone(),
                self.names.clone(),
                std::mem::take(&mut self.token),
            );
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let releasing = cluster.releasing();
                runtime.spawn(async move {
                    let _releasing = releasing;
                    cluster.release(&names, &token).await;
                });
            }
        }
        self.cluster.lease_dropped();
    }
}

/// Runs `channel`'s part in the cluster until the supervisor aborts it.
pub async fn drive(cluster: Arc<Cluster>, polling: Arc<PollContext>, channel: Arc<Channel>) {
    let names = cluster.names(&channel.key);
    let mut taken: Option<String> = None;
    let mut troubles: u32 = 0;
    loop {
        let started = tokio::time::Instant::now();
        let lease = match taken.take() {
            Some(token) => Ok(Some(token)),
            None => cluster.acquire(&names).await,
        };
        let end = match lease {
            Ok(Some(token)) => hold(&cluster, &polling, &channel, &names, token).await,
            Ok(None) => follow(&cluster, &channel, &names).await,
            Err(_) => End::Trouble,
        };
        match end {
            End::Trouble => {
                troubles = troubles.saturating_add(1);
                let wait = (cluster.lease() / 2).saturating_mul(1 << (troubles - 1).min(6));
                alone(&cluster, &polling, &channel, wait.min(MAX_ALONE)).await;
            }
            End::Taken(token) => {
                troubles = 0;
                taken = Some(token);
            }
            End::Again => troubles = 0,
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
) -> End {
    let held = Held::new(cluster, names, token);
    let end = lead(cluster, polling, channel, names, &held.token).await;
    held.release().await;
    end
}

/// The holder's work, under `token`.
async fn lead(
    cluster: &Arc<Cluster>,
    polling: &Arc<PollContext>,
    channel: &Arc<Channel>,
    names: &Names,
    token: &str,
) -> End {
    let Ok(snapshot) = cluster.snapshot(names).await else {
        return End::Trouble;
    };
    let shared = Shared::read(snapshot);
    // A new channel carries on from Redis' state; one with clients already keeps what they
    // were sent, and Redis is brought to it (it lost the key, or is older than this
    // instance's own polls).
    shared.install(channel, cluster.history_events, cluster.history_bytes);
    match overwrite(cluster, names, token, channel, &shared).await {
        Outcome::Published => {}
        Outcome::Lost => return End::Again,
        Outcome::Failed => return End::Trouble,
    }
    // The snapshot and the write took some of the lease: renew before polling.
    match cluster.renew(names, token).await {
        Ok(true) => {}
        Ok(false) => return End::Again,
        Err(_) => return End::Trouble,
    }
    let sources = channel.route().sources.len();
    let holding = Arc::new(Holding::new(
        cluster.clone(),
        names.clone(),
        token.to_owned(),
        channel.state_hash(),
        sources,
    ));
    let mut pollers = JoinSet::new();
    for source in 0..sources {
        // Redis now holds this channel's state: diffing against it is diffing against Redis.
        if let Some(tracker) = channel.tracker(source) {
            let sink = Sink::Shared(holding.clone());
            let run = poller::run(polling.clone(), channel.clone(), source, tracker, sink);
            pollers.spawn(run);
        }
    }
    let every = cluster.lease() / 3;
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = renew.tick() => match cluster.renew(names, token).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(route = %channel.route().path, "cluster: lease lost; following");
                    return End::Again;
                }
                Err(_) => return End::Trouble,
            },
            _ = holding.ended.notified() => {
                return if cluster.redis_up() { End::Again } else { End::Trouble };
            }
        }
    }
}

/// Applies what the holder publishes until the lease is free (then returns it, taken), or
/// Redis fails.
async fn follow(cluster: &Arc<Cluster>, channel: &Arc<Channel>, names: &Names) -> End {
    let Ok(snapshot) = cluster.snapshot(names).await else {
        return End::Trouble;
    };
    let shared = Shared::read(snapshot);
    let installed = shared.install(channel, cluster.history_events, cluster.history_bytes);
    if installed {
        channel.all_answered();
    }
    // A channel with clients whose state differs (it polled alone while Redis was away)
    // converges on Redis' state only once the current holder has written it: before that,
    // Redis may hold a state from before a partition that its clients have seen replaced.
    let differs = !installed && !shared.is_empty() && channel.state_hash() != shared.hash();
    if differs && shared.current_holder {
        channel.converge(&shared.current);
        Metrics::inc(&cluster.stats().converged);
    }
    let mut following = cluster.follow(names, shared.last.clone()).await;
    let every = cluster.lease() / 4;
    let jitter = Duration::from_millis(fastrand::u64(0..=every.as_millis() as u64 / 2));
    let mut attempt = tokio::time::interval_at(tokio::time::Instant::now() + every + jitter, every);
    loop {
        tokio::select! {
            arrival = following.arrivals.recv() => {
                // `None`: this follower fell behind, or the reader lost Redis.
                let Some(arrival) = arrival else {
                    return if cluster.redis_up() { End::Again } else { End::Trouble };
                };
                if !apply(cluster, channel, arrival.notice) {
                    // Drifted (an entry was missed, or the state differed when following
                    // began): converge on what the holder wrote, and read on from there.
                    drop(following);
                    let Ok(snapshot) = cluster.snapshot(names).await else {
                        return End::Trouble;
                    };
                    let shared = Shared::read(snapshot);
                    channel.converge(&shared.current);
                    Metrics::inc(&cluster.stats().converged);
                    following = cluster.follow(names, shared.last).await;
                }
            }
            _ = attempt.tick() => match cluster.acquire(names).await {
                Ok(Some(token)) => {
                    tracing::info!(route = %channel.route().path, "cluster: took over polling a stream key");
                    return End::Taken(token);
                }
                Ok(None) => {}
                Err(_) => return End::Trouble,
            },
        }
    }
}

/// Applies one notice from the holder; `false` when this channel's state drifted from it.
fn apply(cluster: &Cluster, channel: &Channel, notice: Notice) -> bool {
    match notice {
        Notice::Changes { s, ref c } => {
            let changes = notice.changes();
            Metrics::inc(&cluster.stats().applied);
            let consistent = changes.len() == c.len() && channel.apply_shared(s, &changes);
            channel.answered(s);
            consistent
        }
        Notice::Seed { ref c, ref id } => {
            let changes = notice.changes();
            Metrics::inc(&cluster.stats().applied);
            for group in changes.chunk_by(|a, b| a.source == b.source) {
                channel.apply_shared(group[0].source, group);
            }
            // The holder's whole state has this id, whatever this seed had to write.
            changes.len() == c.len() && state_id(channel.state_hash()) == *id
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
            // Only the refusals a poller makes; anything else in Redis is not ours to obey.
            let status = StatusCode::from_u16(status)
                .ok()
                .filter(|s| matches!(s.as_u16(), 401 | 403 | 404 | 410));
            if let Some(status) = status {
                channel.fail(FatalAnswer {
                    status,
                    detail,
                    body: body.map(Bytes::from),
                });
            }
            true
        }
    }
}

/// Polls as a single instance would, until Redis answers again (checked every `wait`).
async fn alone(
    cluster: &Arc<Cluster>,
    polling: &Arc<PollContext>,
    channel: &Arc<Channel>,
    wait: Duration,
) {
    Metrics::inc(&cluster.stats().fallbacks);
    let mut pollers = JoinSet::new();
    for source in 0..channel.route().sources.len() {
        if let Some(tracker) = channel.tracker(source) {
            let run = poller::run(
                polling.clone(),
                channel.clone(),
                source,
                tracker,
                Sink::Local,
            );
            pollers.spawn(run);
        }
    }
    loop {
        tokio::time::sleep(wait).await;
        if cluster.ping().await {
            return;
        }
    }
}
