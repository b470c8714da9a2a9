//! Stream keys the origin refused, answered from memory.
//!
//! When the origin answers a stream's poll with 401, 403, 404 or 410, clients asking for the
//! same key again get that answer as an HTTP status for `[sse] refusal_ttl_s` without asking
//! the origin. A refused key costs one small cache entry (the key and the answer, its body
//! kept only when small), never a channel or a task, and the cache holds at most
//! `[sse] refusal_capacity` keys (the least recently refused go first): a client that asks for thousands of unknown ids cannot grow
//! the proxy.

use std::sync::Arc;
use std::time::Duration;

use moka::policy::EvictionPolicy;
use moka::sync::Cache;

use super::channel::{FatalAnswer, StreamKey};

/// Largest origin body kept with a refusal; a bigger one is answered with its `detail` only.
const MAX_KEPT_BODY: usize = 1024;
/// Longest `detail` kept with a refusal, in bytes.
const MAX_KEPT_DETAIL: usize = 256;

/// Refused keys and the origin's answer, bounded in count and time.
pub struct Refusals {
    /// `None` when `refusal_ttl_s = 0`: refusals are not remembered.
    cache: Option<Cache<StreamKey, Arc<FatalAnswer>>>,
}

impl Refusals {
    /// Remembers up to `capacity` refusals for `ttl` each.
    pub fn new(ttl: Duration, capacity: u64) -> Refusals {
        Refusals {
            cache: (!ttl.is_zero()).then(|| {
                Cache::builder()
                    .max_capacity(capacity)
                    .time_to_live(ttl)
                    // The latest refusals are the ones clients are retrying.
                    .eviction_policy(EvictionPolicy::lru())
                    .build()
            }),
        }
    }

    /// The origin's answer if it refused `key` within the TTL.
    pub fn get(&self, key: &StreamKey) -> Option<Arc<FatalAnswer>> {
        self.cache.as_ref()?.get(key)
    }

    /// Remembers that the origin refused `key` with `answer`.
    pub fn insert(&self, key: StreamKey, answer: &FatalAnswer) {
        let Some(cache) = &self.cache else {
            return;
        };
        let mut detail = answer.detail.clone();
        if detail.len() > MAX_KEPT_DETAIL {
            let mut end = MAX_KEPT_DETAIL;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        let kept = FatalAnswer {
            status: answer.status,
            detail,
            body: answer
                .body
                .clone()
                .filter(|body| body.len() <= MAX_KEPT_BODY),
        };
        cache.insert(key, Arc::new(kept));
        cache.run_pending_tasks();
    }

    /// Refused keys remembered now.
    pub fn count(&self) -> u64 {
        self.cache.as_ref().map_or(0, |cache| {
            cache.run_pending_tasks();
            cache.entry_count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use bytes::Bytes;
    use http::StatusCode;

    fn key(id: usize) -> StreamKey {
        StreamKey::for_tests(0, Mode::Snapshot, vec![format!("id{id}")])
    }

    fn answer(body: usize, detail: usize) -> FatalAnswer {
        FatalAnswer {
            status: StatusCode::NOT_FOUND,
            detail: "é".repeat(detail),
            body: Some(Bytes::from(vec![b'x'; body])),
        }
    }

    #[test]
    fn refusals_are_bounded_and_trimmed() {
        let refusals = Refusals::new(Duration::from_secs(60), 100);
        for id in 0..1_000 {
            refusals.insert(key(id), &answer(10, 1));
        }
        assert!(refusals.count() <= 100, "{} kept", refusals.count());
        refusals.insert(key(5_000), &answer(MAX_KEPT_BODY + 1, MAX_KEPT_DETAIL));
        let kept = refusals.get(&key(5_000)).expect("kept");
        assert_eq!(kept.status, StatusCode::NOT_FOUND);
        assert!(kept.body.is_none(), "a large body is not kept");
        assert!(kept.detail.len() <= MAX_KEPT_DETAIL);
    }

    #[test]
    fn a_zero_ttl_remembers_nothing() {
        let refusals = Refusals::new(Duration::ZERO, 100);
        refusals.insert(key(1), &answer(10, 1));
        assert!(refusals.get(&key(1)).is_none());
        assert_eq!(refusals.count(), 0);
    }
}
