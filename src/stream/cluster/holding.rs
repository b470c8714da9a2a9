//! A lease holder's publishing: each poll's changes go to Redis first, under the lease, then
//! to this instance's clients. A holder that lost its lease publishes nothing (another
//! instance polls now, and will publish the same content under the same ids); one that
//! cannot reach Redis publishes locally and steps down to polling alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

use super::Cluster;
use super::names::Names;
use super::wire::{Notice, Record, slot_field};
use crate::ops::metrics::Metrics;
use crate::stream::channel::Channel;
use crate::stream::delta::Change;
use crate::stream::state::{SharedChange, state_id};

/// One held lease, shared by the key's pollers.
pub struct Holding {
    /// Redis.
    cluster: Arc<Cluster>,
    /// The key's Redis keys.
    names: Names,
    /// The lease's token: every publication is checked against it.
    token: String,
    /// The state hash of what Redis holds for the key, so ids are known before Redis accepts
    /// a batch; its lock also keeps the key's sources from publishing at once.
    shared_hash: tokio::sync::Mutex<u128>,
    /// Set while this instance's state may differ from Redis' (it polled alone, or kept an
    /// older state): the next poll checks, and converges if needed.
    unchecked: AtomicBool,
    /// Signalled when the channel must converge on Redis' snapshot.
    pub diverged: Notify,
    /// Signalled when the lease is lost or Redis failed: the holder steps down.
    pub ended: Notify,
}

impl Holding {
    /// A holding of `token` on `names`, where Redis' state hashes to `shared_hash`;
    /// `unchecked` when the channel's own state may differ from it.
    pub fn new(
        cluster: Arc<Cluster>,
        names: Names,
        token: String,
        shared_hash: u128,
        unchecked: bool,
    ) -> Holding {
        Holding {
            cluster,
            names,
            token,
            shared_hash: tokio::sync::Mutex::new(shared_hash),
            unchecked: AtomicBool::new(unchecked),
            diverged: Notify::new(),
            ended: Notify::new(),
        }
    }

    /// Publishes a poll's changes of `source`; `false` when the poller must stop (the lease
    /// is lost).
    pub async fn publish(&self, channel: &Channel, source: usize, changes: Vec<Change>) -> bool {
        if changes.is_empty() {
            if self.unchecked.swap(false, Ordering::Relaxed) {
                self.diverged.notify_one();
            }
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
        let slots: Vec<(String, String)> = records
            .iter()
            .map(|record| {
                let value = match record.h {
                    Some(_) => serde_json::to_string(record).unwrap_or_default(),
                    None => String::new(),
                };
                (slot_field(source, &record.k), value)
            })
            .collect();
        let notice = serde_json::to_string(&Notice::Changes {
            s: source,
            c: records,
        })
        .unwrap_or_default();
        match self
            .cluster
            .publish(&self.names, &self.token, &notice, &slots)
            .await
        {
            Ok(Some(_)) => {
                *shared_hash = hash;
                Metrics::inc(&self.cluster.metrics.cluster.published);
                let consistent = channel.apply_shared(source, &shared);
                if self.unchecked.swap(false, Ordering::Relaxed) || !consistent {
                    self.diverged.notify_one();
                }
                true
            }
            Ok(None) => {
                tracing::info!(route = %channel.route().path, "cluster: lease lost; another instance polls this stream key");
                self.ended.notify_one();
                false
            }
            Err(_) => {
                // Clients must not wait for Redis: publish here, and step down to polling alone.
                channel.publish(source, changes);
                self.ended.notify_one();
                true
            }
        }
    }

    /// Publishes a notice (outage, recovery, refusal); best effort: followers that miss it
    /// still get every change.
    pub async fn notify(&self, notice: &Notice) {
        let Ok(text) = serde_json::to_string(notice) else {
            return;
        };
        match self
            .cluster
            .publish(&self.names, &self.token, &text, &[])
            .await
        {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => self.ended.notify_one(),
        }
    }
}
