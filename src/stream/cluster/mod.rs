//! Cluster mode (`[cluster] redis = "redis://…"`): several instances behind one load
//! balancer share one poller per stream key, and its history, through Redis.
//!
//! - [`names`]: a stream key's Redis keys.
//! - [`wire`]: the JSON written to Redis (notices in a stream, slots in a hash).
//! - [`scripts`]: the Lua scripts: lease, fenced publish, snapshot.
//! - [`reader`]: the instance's one `XREAD BLOCK` connection, shared by all followers.
//! - [`snapshot`]: a key's state and history as read back from Redis.
//! - [`holding`]: what a lease holder's pollers publish through.
//! - [`roles`]: a channel's life in the cluster: hold, follow, or poll alone.
//!
//! For each stream key with subscribers, one instance holds a lease (`SET NX PX`, renewed,
//! numbered by a fencing counter) and polls; it publishes each poll's changes to the key's
//! Redis stream and state hash, under its lease (a script that refuses a stale holder), then
//! to its own clients. Every other instance with subscribers follows the stream and applies
//! the changes to its own channel, encoding once per instance. Event ids are content hashes,
//! so every instance names the same state with the same id, and a client resumes exactly on
//! any instance (a new channel starts from the state and history kept in Redis). When Redis
//! cannot be reached, each instance polls on its own, as without a cluster, until it is back;
//! then the instance that takes a key's lease first writes its own state to Redis where it
//! differs (Redis lost it, or kept one from before the outage), and followers converge on
//! that, so no client is taken back to an older state.

pub mod holding;
pub mod names;
pub mod reader;
pub mod roles;
pub mod scripts;
pub mod snapshot;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Notify;

use crate::config::{ClusterConfig, SseConfig};
use crate::ops::metrics::{ClusterStats, Metrics};
use crate::ops::shutdown::ShutdownSignal;
use names::Names;
use reader::{Following, Reader};

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The configured URL was refused by the Redis client (checked again at start).
    #[error("[cluster] redis: {0}")]
    Url(#[source] redis::RedisError),
}

/// The command connection, or when making it last failed.
#[derive(Default)]
struct Control {
    /// The connection, once made.
    con: Option<ConnectionManager>,
    /// When the last attempt to make it failed: the next one waits [`RECONNECT`], so that
    /// while Redis is down every channel learns it at once instead of queueing to connect.
    failed_at: Option<Instant>,
}

/// A release in flight, counted until it is answered or its task is dropped.
pub(super) struct Releasing(Arc<Cluster>);

impl Drop for Releasing {
    fn drop(&mut self) {
        self.0.releasing.fetch_sub(1, Ordering::AcqRel);
        self.0.settled.notify_waiters();
    }
}

/// Least time between two attempts to make the command connection.
const RECONNECT: Duration = Duration::from_secs(1);

/// This instance's part in the cluster: its Redis connections and identity.
pub struct Cluster {
    /// `[cluster]`.
    config: ClusterConfig,
    /// Names this process in lease tokens (random, so a restarted instance is a new holder).
    instance: String,
    /// Makes connections.
    client: redis::Client,
    /// Commands: scripts and snapshots. Made on first use (Redis may be down at start), then
    /// it reconnects by itself.
    control: tokio::sync::Mutex<Control>,
    /// The shared `XREAD` connection.
    reader: Arc<Reader>,
    /// `MAXLEN ~` of each key's stream: `[sse] history_events`.
    history_events: usize,
    /// `[sse] history_bytes`, for states rebuilt from Redis.
    history_bytes: usize,
    /// How long a key's stream and state outlive their last write: `[sse] resume_window_s`.
    ttl: Duration,
    /// Counters; `metrics.cluster` is this module's.
    metrics: Arc<Metrics>,
    /// Releases sent from a task (by a lease dropped with its role) and not yet answered.
    releasing: AtomicUsize,
    /// Told when a lease is dropped or a release is answered, for [`Cluster::settled`].
    settled: Notify,
}

impl Cluster {
    /// Starts the reader; connects lazily, so a Redis that is down at start only means
    /// polling alone until it is up.
    pub fn start(
        config: ClusterConfig,
        sse: &SseConfig,
        metrics: Arc<Metrics>,
        shutdown: ShutdownSignal,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let client = redis::Client::open(config.redis.as_str()).map_err(ClusterError::Url)?;
        let reader = Reader::new();
        tokio::spawn(reader.clone().run(client.clone(), shutdown));
        metrics.cluster.enabled.store(true, Ordering::Relaxed);
        let cluster = Arc::new(Cluster {
            config,
            instance: format!("{:016x}", fastrand::u64(..)),
            client,
            control: tokio::sync::Mutex::new(Control::default()),
            reader,
            history_events: sse.history_events,
            history_bytes: sse.history_bytes,
            ttl: sse.resume_window,
            metrics,
            releasing: AtomicUsize::new(0),
            settled: Notify::new(),
        });
        // Says whether Redis is up before any stream asks (for /readyz and the metrics).
        let first = cluster.clone();
        tokio::spawn(async move { first.ping().await });
        Ok(cluster)
    }

    /// This module's counters.
    fn stats(&self) -> &ClusterStats {
        &self.metrics.cluster
    }

    /// Whether the last Redis command succeeded.
    pub fn redis_up(&self) -> bool {
        self.stats().redis_up.load(Ordering::Relaxed)
    }

    /// Stream keys this instance polls for the cluster.
    pub fn leases(&self) -> i64 {
        self.stats().leases_held.load(Ordering::Relaxed)
    }

    /// The Redis keys of a stream key.
    pub fn names(&self, key: &crate::stream::channel::StreamKey) -> Names {
        Names::of(&self.config.prefix, key)
    }

    /// The lease duration.
    pub fn lease(&self) -> Duration {
        self.config.lease
    }

    /// Waits, at most `limit`, until this instance holds no lease and every release it sent
    /// was answered: on shutdown, so the other instances take its keys over at once instead
    /// of after the lease expires.
    pub async fn settled(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Made before the check: `notify_waiters` reaches it from here on.
            let told = self.settled.notified();
            if self.leases() == 0 && self.releasing.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, told).await.is_err() {
                tracing::warn!(
                    leases = self.leases(),
                    "cluster leases still held at exit; other instances take them when they expire"
                );
                return;
            }
        }
    }

    /// A release sent from a task begins; the guard ends it, answered or dropped.
    pub(super) fn releasing(self: &Arc<Self>) -> Releasing {
        self.releasing.fetch_add(1, Ordering::AcqRel);
        Releasing(self.clone())
    }

    /// A lease was dropped: [`Cluster::settled`] looks again.
    pub(super) fn lease_dropped(&self) {
        self.settled.notify_waiters();
    }

    /// The command connection, made now if it is not yet.
    async fn con(&self) -> redis::RedisResult<ConnectionManager> {
        let mut control = self.control.lock().await;
        if let Some(con) = control.con.as_ref() {
            return Ok(con.clone());
        }
        if control.failed_at.is_some_and(|at| at.elapsed() < RECONNECT) {
            let down = std::io::Error::new(std::io::ErrorKind::NotConnected, "Redis is down");
            return Err(down.into());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        match self.client.get_connection_manager_with_config(config).await {
            Ok(con) => {
                *control = Control {
                    con: Some(con.clone()),
                    failed_at: None,
                };
                Ok(con)
            }
            Err(error) => {
                control.failed_at = Some(Instant::now());
                self.failed(&error);
                Err(error)
            }
        }
    }

    /// Records a command's outcome: Redis' state changes are logged once, not per command.
    fn outcome<T>(&self, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        match &result {
            Ok(_) => {
                if !self.stats().redis_up.swap(true, Ordering::Relaxed) {
                    tracing::info!(
                        "cluster: Redis answers; one poller per stream key across instances"
                    );
                }
            }
            Err(error) => self.failed(error),
        }
        result
    }

    /// Counts a failed command; logs when Redis goes from up to down.
    fn failed(&self, error: &redis::RedisError) {
        Metrics::inc(&self.stats().redis_errors);
        if self.stats().redis_up.swap(false, Ordering::Relaxed) {
            tracing::warn!(%error, "cluster: Redis unreachable; each instance polls on its own until it is back");
        }
    }

    /// Takes the lease of `names` if it is free.
    pub async fn acquire(&self, names: &Names) -> redis::RedisResult<Option<String>> {
        let mut con = self.con().await?;
        // Unique per acquisition, so a token outlives neither the fence counter's expiry nor
        // a release that comes late.
        let holder = format!("{}:{:08x}", self.instance, fastrand::u32(..));
        let result = scripts::acquire(&mut con, names, &holder, self.config.lease, self.ttl).await;
        let token = self.outcome(result)?;
        if token.is_some() {
            Metrics::inc(&self.stats().leases_taken);
        }
        Ok(token)
    }

    /// Renews the lease `token` holds; `false` when it is lost.
    pub async fn renew(&self, names: &Names, token: &str) -> redis::RedisResult<bool> {
        let mut con = self.con().await?;
        let result = scripts::renew(&mut con, names, token, self.config.lease, self.ttl).await;
        self.outcome(result)
    }

    /// Gives the lease up (the key has no subscribers here any more, or the proxy stops).
    pub async fn release(&self, names: &Names, token: &str) {
        if let Ok(mut con) = self.con().await {
            let result = scripts::release(&mut con, names, token).await;
            let _ = self.outcome(result);
        }
    }

    /// Publishes under `token`'s lease: the entry's id, or `None` when the lease is lost.
    pub async fn publish(
        &self,
        names: &Names,
        token: &str,
        notice: &str,
        slots: &[(String, String)],
    ) -> redis::RedisResult<Option<String>> {
        let mut con = self.con().await?;
        let publication = scripts::Publication {
            notice,
            slots,
            history: self.history_events,
            ttl: self.ttl,
        };
        let result = scripts::publish(&mut con, names, token, &publication).await;
        self.outcome(result)
    }

    /// The key's state and history as Redis keeps them.
    pub async fn snapshot(&self, names: &Names) -> redis::RedisResult<scripts::Snapshot> {
        let mut con = self.con().await?;
        let result = scripts::snapshot(&mut con, names, self.history_events).await;
        self.outcome(result)
    }

    /// Whether Redis answers a `PING`.
    pub async fn ping(&self) -> bool {
        let Ok(mut con) = self.con().await else {
            return false;
        };
        let result: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut con).await;
        self.outcome(result).is_ok()
    }

    /// Follows `names`' stream after entry `from`.
    pub async fn follow(&self, names: &Names, from: String) -> Following {
        let (following, blocked) = self.reader.follow(&names.events, from);
        if let Some(client) = blocked
            && let Ok(mut con) = self.con().await
        {
            // The reader is blocked in a read that does not include this stream yet.
            let result: redis::RedisResult<i64> = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(client)
                .query_async(&mut con)
                .await;
            let _ = self.outcome(result);
        }
        following
    }
}
