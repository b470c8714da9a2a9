//! The resume window: stream keys' states kept after their pollers stopped.
//!
//! A poller stops `linger` after its key's last client leaves, but a browser reconnects after
//! the `retry:` the proxy advised, and a per-user stream has a single client: without this,
//! every such reconnect would find no history and get a `resync`. So the hub parks a retiring
//! channel's [`State`] here for `[sse] resume_window_s`, and a channel created again for the
//! key starts from it: its poller diffs against the kept state, and the client's
//! `Last-Event-ID` is found in the kept history, so it gets exactly the difference.
//!
//! All kept states share one byte budget (`[sse] resume_memory_bytes`); beyond it the least
//! recently parked are dropped (their clients get a `resync`, as before).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::channel::StreamKey;
use super::state::State;

/// A kept state; taken (once) by the channel that revives its key.
struct Parked {
    /// The state, until a channel takes it.
    state: Mutex<Option<State>>,
    /// Its size when parked, in bytes, as weighed against the budget.
    weight: u32,
}

/// Kept states by stream key, bounded in time and bytes.
pub struct Resume {
    /// Expires entries `resume_window` after parking; evicts the least recently used beyond
    /// the byte budget.
    kept: Cache<StreamKey, Arc<Parked>>,
}

impl Resume {
    /// A store that keeps states for `window`, within `budget_bytes` in all.
    pub fn new(window: Duration, budget_bytes: u64) -> Resume {
        Resume {
            kept: Cache::builder()
                .max_capacity(budget_bytes)
                .weigher(|_, parked: &Arc<Parked>| parked.weight)
                .time_to_live(window)
                .eviction_policy(EvictionPolicy::lru())
                .build(),
        }
    }

    /// Keeps `state` for `key` (a state with nothing published is not worth keeping).
    pub fn park(&self, key: StreamKey, state: State) {
        if state.is_empty() {
            return;
        }
        let bytes = state.memory() + key.memory();
        let weight = u32::try_from(bytes).unwrap_or(u32::MAX);
        let parked = Arc::new(Parked {
            state: Mutex::new(Some(state)),
            weight,
        });
        self.kept.insert(key, parked);
        // Apply the budget now rather than on some later call, so memory stays bounded.
        self.kept.run_pending_tasks();
    }

    /// The state kept for `key`, removed from the store.
    pub fn take(&self, key: &StreamKey) -> Option<State> {
        let parked = self.kept.remove(key)?;
        let mut state = parked.state.lock().unwrap_or_else(|e| e.into_inner());
        state.take()
    }

    /// Keys kept now, and the bytes they weigh.
    pub fn usage(&self) -> (u64, u64) {
        self.kept.run_pending_tasks();
        (self.kept.entry_count(), self.kept.weighted_size())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use bytes::Bytes;

    fn key(id: &str) -> StreamKey {
        StreamKey::for_tests(0, Mode::Snapshot, vec![id.to_owned()])
    }

    fn published(key: &StreamKey, size: usize) -> State {
        let mut state = State::new(100, 1 << 20);
        let mut tracker = state.tracker(&key.route, 0).expect("source");
        let body = Bytes::from(serde_json::json!({ "pad": "x".repeat(size) }).to_string());
        state.publish(&key.route, 0, tracker.apply(&body).expect("json"));
        state
    }

    #[test]
    fn a_kept_state_is_taken_once() {
        let resume = Resume::new(Duration::from_secs(60), 1 << 20);
        let a = key("a");
        resume.park(a.clone(), published(&a, 100));
        assert_eq!(resume.usage().0, 1);
        assert!(resume.take(&a).is_some());
        assert!(resume.take(&a).is_none());
        resume.park(a.clone(), State::new(100, 1 << 20));
        assert_eq!(resume.usage().0, 0, "an empty state is not kept");
    }

    #[test]
    fn the_budget_evicts_the_least_recently_parked() {
        let resume = Resume::new(Duration::from_secs(60), 10_000);
        for id in 0..20 {
            let k = key(&format!("k{id}"));
            resume.park(k.clone(), published(&k, 1_000));
            let (_, bytes) = resume.usage();
            assert!(bytes <= 10_000, "{bytes} bytes kept");
        }
        assert!(resume.take(&key("k19")).is_some(), "the newest stays");
        assert!(resume.take(&key("k0")).is_none(), "the oldest went");
        let big = key("big");
        resume.park(big.clone(), published(&big, 20_000));
        assert!(
            resume.take(&big).is_none(),
            "over the whole budget: not kept"
        );
    }
}
