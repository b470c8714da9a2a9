//! A lease holder's publishing: each poll's changes go to Redis first, under the lease, then
//! to this instance's clients. A holder that lost its lease publishes nothing (another
//! instance polls now, and will publish the same content under the same ids); one that
//! cannot reach Redis publishes locally and steps down to polling alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use super::Cluster;
use super::names::Names;
use super::snapshot::Shared;
use super::wire::{Notice, Record, publication};
use crate::ops::metrics::Metrics;
use crate::stream::channel::Channel;
use crate::stream::delta::Change;
use crate::stream::state::{SharedChange, state_id};

/// What became of a publication.
pub enum Outcome {
    /// Redis took it.
    Published,
    /// The lease is not ours any more: nothing was written.
    Lost,
    /// Redis failed.
    Failed,
}

/// One held lease, shared by the key's pollers.
pub struct Holding {
    /// Redis.
    cluster: Arc<Cluster>,
    /// The key's Redis keys.
    names: Names,
    /// The lease's token: every publication is checked against it.
    pub token: String,
    /// The state hash of what Redis holds for the key, so ids are known before Redis accepts
    /// a batch; its lock also keeps the key's sources (and realignments) from publishing at
    /// once.
    shared_hash: tokio::sync::Mutex<u128>,
    /// Whether each source's first answer was announced: followers of a key whose first
    /// poll changed nothing still learn that the origin answered.
    announced: Vec<AtomicBool>,
    /// Signalled when the lease is lost or Redis failed: the holder steps down.
    pub ended: Notify,
}

impl Holding {
    /// A holding of `token` on `names`, for a route with `sources` sources, where Redis'
    /// state hashes to `shared_hash`.
    pub fn new(
        cluster: Arc<Cluster>,
        names: Names,
        token: String,
        shared_hash: u128,
        sources: usize,
    ) -> Holding {
        Holding {
            cluster,
            names,
            token,
            shared_hash: tokio::sync::Mutex::new(shared_hash),
            announced: (0..sources).map(|_| AtomicBool::new(false)).collect(),
            ended: Notify::new(),
        }
    }

    /// Publishes a poll's changes of `source`; `false` when the poller must stop (the lease
    /// is lost).
    pub async fn publish(&self, channel: &Channel, source: usize, changes: Vec<Change>) -> bool {
        let first = self
            .announced
            .get(source)
            .is_some_and(|a| !a.swap(true, Ordering::Relaxed));
        if changes.is_empty() && !first {
            return true;
        }
        let mut shared_hash = self.shared_hash.lock().await;
        let mut hash = *shared_hash;
        let shared: Vec<SharedChange> = changes
            .iter()
            .map(|change| {
                hash = hash.wrapping_sub(change.old_hash);
                if let Some((new, _)) = &change.new {
                    hash = hash.wrapping_add(*new);
                }
                SharedChange {
                    source,
                    key: change.key.clone(),
                    new: change.new.clone(),
                    id: state_id(hash),
                }
            })
            .collect();
        let records: Vec<Record> = shared.iter().map(Record::of).collect();
        let sourced: Vec<(usize, &Record)> = records.iter().map(|r| (source, r)).collect();
        let notice = Notice::Changes {
            s: source,
            c: records.clone(),
        };
        match self.write(&notice, &sourced).await {
            Outcome::Published => {
                *shared_hash = hash;
                Metrics::inc(&self.cluster.stats().published);
                if !channel.apply_shared(source, &shared) {
                    // This instance's state had drifted from Redis' (it should not, as the
                    // holder wrote both): make Redis hold what clients here were sent.
                    self.realign_locked(channel, &mut shared_hash).await;
                }
                true
            }
            Outcome::Lost => {
                tracing::info!(route = %channel.route().path, "cluster: lease lost; another instance polls this stream key");
                self.ended.notify_one();
                false
            }
            Outcome::Failed => {
                // Clients must not wait for Redis: apply here (against this state's own
                // hashes), and step down to polling alone.
                channel.apply_shared(source, &shared);
                self.ended.notify_one();
                true
            }
        }
    }

    /// Writes whatever makes Redis hold this channel's state (after a drift).
    async fn realign_locked(&self, channel: &Channel, shared_hash: &mut u128) {
        let Ok(snapshot) = self.cluster.snapshot(&self.names).await else {
            self.ended.notify_one();
            return;
        };
        let shared = Shared::read(snapshot);
        match overwrite(&self.cluster, &self.names, &self.token, channel, &shared).await {
            Outcome::Published => {
                *shared_hash = channel.state_hash();
                Metrics::inc(&self.cluster.stats().converged);
            }
            Outcome::Lost | Outcome::Failed => self.ended.notify_one(),
        }
    }

    /// Publishes a notice (outage, recovery, refusal); best effort: followers that miss it
    /// still get every change.
    pub async fn notify(&self, notice: &Notice) {
        if !matches!(self.write(notice, &[]).await, Outcome::Published) {
            self.ended.notify_one();
        }
    }

    async fn write(&self, notice: &Notice, records: &[(usize, &Record)]) -> Outcome {
        write(&self.cluster, &self.names, &self.token, notice, records).await
    }
}

/// Publishes `notice` with its records' state updates under `token`.
pub async fn write(
    cluster: &Cluster,
    names: &Names,
    token: &str,
    notice: &Notice,
    records: &[(usize, &Record)],
) -> Outcome {
    let Some((text, slots)) = publication(notice, records) else {
        return Outcome::Failed;
    };
    match cluster.publish(names, token, &text, &slots).await {
        Ok(Some(_)) => Outcome::Published,
        Ok(None) => Outcome::Lost,
        Err(_) => Outcome::Failed,
    }
}

/// Makes Redis hold `channel`'s state where it differs from `shared` (Redis lost the key,
/// or kept an older state while this instance polled alone), as one [`Notice::Seed`], so no
/// follower converges on a partial or stale state. Written even when nothing differs: it
/// tells followers that the state in Redis is the current holder's.
pub async fn overwrite(
    cluster: &Cluster,
    names: &Names,
    token: &str,
    channel: &Channel,
    shared: &Shared,
) -> Outcome {
    let diff = channel.diff_from(&shared.current);
    let records: Vec<(usize, Record)> = diff.iter().map(|c| (c.source, Record::of(c))).collect();
    let sourced: Vec<(usize, &Record)> = records.iter().map(|(s, r)| (*s, r)).collect();
    let notice = Notice::Seed {
        c: records.clone(),
        id: state_id(channel.state_hash()),
    };
    write(cluster, names, token, &notice, &sourced).await
}
