//! The hub: one channel and one poller per stream key, however many clients.
//!
//! The first subscriber of a key creates its [`Channel`] (from the state kept in the resume
//! window, if any) and a supervisor task that runs one poller per source and the channel's
//! heartbeat. The supervisor retires the channel a short `linger` after its last subscriber
//! leaves (aborting any poll in flight) and parks its state in the [`Resume`] window, so a
//! reconnect within `resume_window` gets exactly what it missed. When the origin refuses the
//! stream, the channel is retired at once and only the refusal is remembered
//! ([`Refusals`]), so reconnecting clients get it as an HTTP status without asking the
//! origin again, and refused keys cost no channel and no task. With `[cluster]`, the
//! supervisor runs the channel's [`roles`] instead of its pollers: it polls only while this
//! instance holds the key's lease, and otherwise applies what the holder publishes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinSet;

use super::Identity;
use super::channel::{Channel, FatalAnswer, Phase, StreamKey};
use super::cluster::{Cluster, roles};
use super::poller;
use super::poller::{PollContext, Sink};
use super::refusals::Refusals;
use super::resume::Resume;
use super::sse;
use super::state::State;
use crate::config::{SseConfig, StreamConfig};
use crate::ops::metrics::{HubGauge, Metrics, RouteGauge};
use crate::ops::shutdown::ShutdownSignal;
use crate::origin::Upstream;

/// Shared by the hub handle and supervisors.
pub struct HubShared {
    /// Live channels by key.
    channels: Mutex<HashMap<StreamKey, Arc<Channel>>>,
    /// The configured stream routes, for the per-route gauges.
    routes: Vec<Arc<StreamConfig>>,
    /// What every poller shares: the origin, the counters, the backoff ceiling.
    polling: Arc<PollContext>,
    /// Heartbeat, linger and history settings.
    sse: SseConfig,
    /// Keys the origin refused, answered from memory for `refusal_ttl`.
    refusals: Refusals,
    /// States of keys whose poller stopped, kept for `resume_window`.
    resume: Resume,
    /// Fires when the proxy shuts down.
    shutdown: ShutdownSignal,
    /// Counters shared with every channel.
    metrics: Arc<Metrics>,
    /// Set (under the channels' lock) when the proxy starts shutting down: the frame that
    /// ends every stream, including ones that subscribe afterwards.
    closing: OnceLock<Bytes>,
    /// Redis shared with other instances (`[cluster]`): keys are polled by one of them.
    cluster: Option<Arc<Cluster>>,
    /// The runtime the hub was made on (the process' shared one), where every channel's
    /// supervisor runs: a channel opened by a request on a serving thread (`[listen]
    /// serving_threads`) outlives that thread's runtime, and its pollers, heartbeats and
    /// cluster lease must not stop or hop threads with it.
    runtime: tokio::runtime::Handle,
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
    async fn wait_ready(&self, bound: Duration) -> Phase {
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
    /// A hub with no channels; call it on the runtime its channels' supervisors should run on.
    pub fn new(
        routes: Vec<Arc<StreamConfig>>,
        upstream: Arc<Upstream>,
        sse: SseConfig,
        shutdown: ShutdownSignal,
        metrics: Arc<Metrics>,
        cluster: Option<Arc<Cluster>>,
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
                refusals: Refusals::new(sse.refusal_ttl, sse.refusal_capacity),
                resume: Resume::new(sse.resume_window, sse.resume_memory_bytes),
                sse,
                shutdown,
                metrics,
                closing: OnceLock::new(),
                cluster,
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// Joins the channel for `key` and waits (up to `wait`) for its first poll; the origin's
    /// refusal, remembered or new, is the error.
    pub async fn join(
        &self,
        key: StreamKey,
        identity: Option<Identity>,
        wait: Duration,
    ) -> Result<Subscription, Arc<FatalAnswer>> {
        let subscription = self.subscribe(key, identity)?;
        match subscription.wait_ready(wait).await {
            Phase::Failed(answer) => {
                // Retire the channel before answering, so the refusal costs no channel even
                // while its supervisor has not run yet.
                self.shared.refuse(&subscription.channel, &answer);
                Err(answer)
            }
            Phase::Pending | Phase::Live => Ok(subscription),
        }
    }

    /// Joins the channel for `key`, creating it (and its pollers) if it is the first client,
    /// unless the origin refused the key within `refusal_ttl`.
    fn subscribe(
        &self,
        key: StreamKey,
        identity: Option<Identity>,
    ) -> Result<Subscription, Arc<FatalAnswer>> {
        let mut channels = self.shared.lock();
        if let Some(existing) = channels.get(&key) {
            let id = existing.attach(identity);
            if let Some(frame) = self.shared.closing.get() {
                existing.end(frame.clone());
            }
            return Ok(Subscription {
                channel: existing.clone(),
                id,
            });
        }
        if let Some(answer) = self.shared.refusals.get(&key) {
            return Err(answer);
        }
        if let Some(frame) = self.shared.closing.get() {
            // Shutting down: no poller, and the stream ends as soon as it starts.
            let state = self.shared.empty_state();
            let channel = Arc::new(Channel::new(key, state, self.shared.metrics.clone()));
            let id = channel.attach(identity);
            channel.end(frame.clone());
            return Ok(Subscription { channel, id });
        }
        // Within the resume window, carry on from the state the last poller left.
        let state = self
            .shared
            .resume
            .take(&key)
            .unwrap_or_else(|| self.shared.empty_state());
        let channel = Arc::new(Channel::new(
            key.clone(),
            state,
            self.shared.metrics.clone(),
        ));
        // Attach (with the credentials the pollers forward) before they start.
        let id = channel.attach(identity);
        channels.insert(key, channel.clone());
        let supervisor = supervise(self.shared.clone(), channel.clone());
        self.shared.runtime.spawn(supervisor);
        Ok(Subscription { channel, id })
    }

    /// Channels (and so pollers) alive now.
    pub fn channel_count(&self) -> usize {
        self.shared.lock().len()
    }

    /// The proxy's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// What the hub remembers besides live channels: refusals, and states kept to resume.
    pub fn gauge(&self) -> HubGauge {
        let (resume_keys, resume_bytes) = self.shared.resume.usage();
        HubGauge {
            refused_keys: self.shared.refusals.count(),
            resume_keys,
            resume_bytes,
        }
    }

    /// Cluster mode's state (`None` without `[cluster]`).
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.shared.cluster.as_ref()
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
            if let Some(route) = routes.get_mut(channel.key.route.index) {
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

    /// A state with nothing published yet, bounded by the configured history.
    fn empty_state(&self) -> State {
        State::new(self.sse.history_events, self.sse.history_bytes)
    }

    /// Retires `channel` if it is still the one registered for its key and has no
    /// subscribers (subscribing happens under the same lock, so none can slip in), and keeps
    /// its state for the resume window. Returns whether the supervisor is done.
    fn retire(&self, channel: &Arc<Channel>) -> bool {
        let mut channels = self.lock();
        let current = channels
            .get(&channel.key)
            .is_some_and(|c| Arc::ptr_eq(c, channel));
        if !current {
            return true;
        }
        if channel.subscribers() > 0 {
            return false;
        }
        channels.remove(&channel.key);
        self.resume.park(channel.key.clone(), channel.take_state());
        true
    }

    /// The origin refused `channel`'s key: remember the answer, and retire the channel (its
    /// subscribers were sent the end frame). Idempotent; under the channels' lock, so a new
    /// client finds either the failed channel or the refusal.
    fn refuse(&self, channel: &Arc<Channel>, answer: &FatalAnswer) {
        let mut channels = self.lock();
        let current = channels
            .get(&channel.key)
            .is_some_and(|c| Arc::ptr_eq(c, channel));
        if current {
            self.refusals.insert(channel.key.clone(), answer);
            channels.remove(&channel.key);
        }
    }
}

/// Runs a channel's pollers and heartbeat until it is retired: linger, heartbeat, refusal and
/// shutdown are branches of one `select!`, so none waits for another.
async fn supervise(hub: Arc<HubShared>, channel: Arc<Channel>) {
    let mut pollers = JoinSet::new();
    match &hub.cluster {
        Some(cluster) => {
            let driving = roles::drive(cluster.clone(), hub.polling.clone(), channel.clone());
            pollers.spawn(driving);
        }
        None => {
            for source in 0..channel.route().sources.len() {
                // Carries on from the channel's state, which may be kept from an earlier poller.
                if let Some(tracker) = channel.tracker(source) {
                    let polling = hub.polling.clone();
                    let run = poller::run(polling, channel.clone(), source, tracker, Sink::Local);
                    pollers.spawn(run);
                }
            }
        }
    }
    let beat = hub.sse.heartbeat;
    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + beat, beat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let linger = tokio::time::sleep(hub.sse.linger);
    tokio::pin!(linger);
    let mut lingering = false;
    let mut shutdown = hub.shutdown.clone();
    loop {
        tokio::select! {
            _ = heartbeat.tick() => channel.heartbeat(),
            _ = channel.idle.notified() => {
                linger.as_mut().reset(tokio::time::Instant::now() + hub.sse.linger);
                lingering = true;
            }
            _ = &mut linger, if lingering => {
                lingering = false;
                if hub.retire(&channel) {
                    break;
                }
            }
            _ = channel.failed.notified() => {
                if let Some(answer) = channel.refusal() {
                    hub.refuse(&channel, &answer);
                }
                break;
            }
            _ = shutdown.fired() => break,
        }
    }
    pollers.abort_all();
    tracing::debug!(route = %channel.route().path, "poller stopped");
}
