//! The hub: one channel and one poller per stream key, however many clients.
//!
//! The first subscriber of a key creates its [`Channel`] and a supervisor task that runs one
//! poller per source and the channel's heartbeat. The supervisor retires the channel a short
//! `linger` after its last subscriber leaves (aborting any poll in flight), or, when the
//! origin refused the stream, keeps it for `negative_ttl` so reconnecting clients get the
//! refusal as an HTTP status without asking the origin again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use super::Identity;
use super::channel::{Channel, Phase, StreamKey};
use super::poller;
use super::poller::PollContext;
use super::sse;
use crate::config::{SseConfig, StreamConfig};
use crate::ops::metrics::{Metrics, RouteGauge};
use crate::ops::shutdown::ShutdownSignal;
use crate::origin::Upstream;

/// Shared by the hub handle, supervisors and pollers.
pub struct HubShared {
    /// Live channels by key.
    channels: Mutex<HashMap<StreamKey, Arc<Channel>>>,
    /// The configured stream routes, for the per-route gauges.
    routes: Vec<Arc<StreamConfig>>,
    /// What every poller shares: the origin, the counters, the backoff ceiling.
    polling: Arc<PollContext>,
    /// Heartbeat, linger and history settings.
    sse: SseConfig,
    /// How long a refused stream is answered from memory.
    negative_ttl: Duration,
    /// Fires when the proxy shuts down.
    shutdown: ShutdownSignal,
    /// Counters shared with every channel.
    metrics: Arc<Metrics>,
    /// Set (under the channels' lock) when the proxy starts shutting down: the frame that
    /// ends every stream, including ones that subscribe afterwards.
    closing: OnceLock<Bytes>,
}

/// Creates, shares and retires channels.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<HubShared>,
}

/// A client's membership in a channel; leaving is dropping it.
pub struct Subscription {
    channel: Arc<Channel>,
    /// This subscriber's number in the channel.
    id: u64,
}

impl Subscription {
    /// The channel subscribed to.
    pub fn channel(&self) -> &Arc<Channel> {
        &self.channel
    }

    /// Waits until every source answered once, the origin refused, or `bound` passed.
    pub async fn wait_ready(&self, bound: Duration) -> Phase {
        let mut phase = self.channel.phase();
        let ready = async {
            phase
                .wait_for(|p| !matches!(p, Phase::Pending))
                .await
                .map(|p| p.clone())
        };
        match tokio::time::timeout(bound, ready).await {
            Ok(Ok(ready)) => ready,
            _ => self.channel.phase().borrow().clone(),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.channel.detach(self.id);
    }
}

impl Hub {
    /// A hub with no channels.
    pub fn new(
        routes: Vec<Arc<StreamConfig>>,
        upstream: Arc<Upstream>,
        sse: SseConfig,
        negative_ttl: Duration,
        shutdown: ShutdownSignal,
        metrics: Arc<Metrics>,
    ) -> Hub {
        Hub {
            shared: Arc::new(HubShared {
                channels: Mutex::new(HashMap::new()),
                routes,
                polling: Arc::new(PollContext {
                    upstream,
                    metrics: metrics.clone(),
                    max_backoff: sse.max_backoff,
                }),
                sse,
                negative_ttl,
                shutdown,
                metrics,
                closing: OnceLock::new(),
            }),
        }
    }

    /// Joins the channel for `key` (of `route`), creating it (and its pollers) if it is the
    /// first client.
    pub fn subscribe(
        &self,
        route: Arc<StreamConfig>,
        key: StreamKey,
        identity: Option<Identity>,
    ) -> Subscription {
        let mut channels = self.shared.lock();
        if let Some(existing) = channels.get(&key) {
            let id = existing.attach(identity);
            if let Some(frame) = self.shared.closing.get() {
                existing.end(frame.clone());
            }
            return Subscription {
                channel: existing.clone(),
                id,
            };
        }
        let channel = Arc::new(Channel::new(
            key.clone(),
            route,
            self.shared.sse.history_events,
            self.shared.sse.history_bytes,
            self.shared.metrics.clone(),
        ));
        // Attach (with the credentials the pollers forward) before they start.
        let id = channel.attach(identity);
        if let Some(frame) = self.shared.closing.get() {
            // Shutting down: no poller, and the stream ends as soon as it starts.
            channel.end(frame.clone());
            return Subscription { channel, id };
        }
        channels.insert(key, channel.clone());
        tokio::spawn(supervise(self.shared.clone(), channel.clone()));
        Subscription { channel, id }
    }

    /// Channels (and so pollers) alive now.
    pub fn channel_count(&self) -> usize {
        self.shared.lock().len()
    }

    /// The proxy's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Pollers and subscribers of each configured route now.
    pub fn per_route(&self) -> Vec<RouteGauge> {
        let mut routes: Vec<RouteGauge> = self
            .shared
            .routes
            .iter()
            .map(|r| RouteGauge {
                route: r.path.to_string(),
                ..RouteGauge::default()
            })
            .collect();
        for channel in self.shared.lock().values() {
            if let Some(route) = routes.get_mut(channel.key.route) {
                route.pollers += 1;
                route.subscribers += channel.subscribers();
            }
        }
        routes
    }

    /// Ends every stream with a `retry:` hint so `EventSource` reconnects (to another instance).
    pub fn close_all(&self, retry_ms: u64) {
        let mut frame = BytesMut::new();
        sse::retry_into(&mut frame, retry_ms);
        sse::comment_into(&mut frame, "server shutting down; reconnect");
        let frame: Bytes = frame.freeze();
        let channels: Vec<Arc<Channel>> = {
            let channels = self.shared.lock();
            let _ = self.shared.closing.set(frame.clone());
            channels.values().cloned().collect()
        };
        for channel in channels {
            channel.end(frame.clone());
        }
    }
}

impl HubShared {
    fn lock(&self) -> MutexGuard<'_, HashMap<StreamKey, Arc<Channel>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes `channel` if it is still the one registered for its key and, unless `force`,
    /// has no subscribers. Subscribing happens under the same lock, so none can slip in.
    fn retire(&self, channel: &Arc<Channel>, force: bool) -> bool {
        let mut channels = self.lock();
        let current = channels
            .get(&channel.key)
            .is_some_and(|c| Arc::ptr_eq(c, channel));
        if current && (force || channel.subscribers() == 0) {
            channels.remove(&channel.key);
            true
        } else {
            !current
        }
    }
}

/// Runs a channel's pollers and heartbeat until it is retired.
async fn supervise(hub: Arc<HubShared>, channel: Arc<Channel>) {
    let mut pollers = JoinSet::new();
    for source in 0..channel.route.sources.len() {
        pollers.spawn(poller::run(hub.polling.clone(), channel.clone(), source));
    }
    let beat = hub.sse.heartbeat;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shutdown = hub.shutdown.clone();
    loop {
        tokio::select! {
            _ = heartbeat.tick() => channel.heartbeat(),
            _ = channel.idle.notified() => {
                tokio::time::sleep(hub.sse.linger).await;
                if hub.retire(&channel, false) {
                    break;
                }
            }
            _ = channel.failed.notified() => {
                pollers.abort_all();
                let mut stop = hub.shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(hub.negative_ttl) => {}
                    _ = stop.fired() => {}
                }
                hub.retire(&channel, true);
                break;
            }
            _ = shutdown.fired() => break,
        }
    }
    tracing::debug!(route = %channel.route.path, "poller stopped");
}
