//! The bound on distinct stream keys per route (`[[stream]] max_keys`).
//!
//! Every distinct key (route, path and query parameter values, user) costs a poller hitting
//! the origin. A route's open streams are already bounded (`max_streams`, and per user
//! `max_streams_per_user`), but one client could still spread them over as many keys; this
//! bound caps the keys a route has streams open on at once. Clients of a key already open
//! always join it: only a new key is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::channel::StreamKey;

/// Open streams by key, and distinct keys by route.
#[derive(Default)]
struct Counts {
    /// Streams open on each key.
    streams: HashMap<StreamKey, usize>,
    /// Keys with open streams, by route index.
    keys: HashMap<usize, usize>,
}

/// The key counts shared by every open stream.
#[derive(Clone, Default)]
pub struct KeyCounts {
    counts: Arc<Mutex<Counts>>,
}

/// One stream's hold on its key, given back when the stream's body is dropped.
pub struct KeySlot {
    counts: Arc<Mutex<Counts>>,
    key: StreamKey,
}

impl KeyCounts {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a hold on `key`; `None` when it is a new key and its route already has
    /// `max_keys` keys open.
    pub fn take(&self, key: &StreamKey, max_keys: usize) -> Option<KeySlot> {
        let mut counts = self.lock();
        let route_keys = counts.keys.get(&key.route.index).copied().unwrap_or(0);
        match counts.streams.get_mut(key) {
            Some(open) => *open += 1,
            None if route_keys >= max_keys => return None,
            None => {
                counts.streams.insert(key.clone(), 1);
                counts.keys.insert(key.route.index, route_keys + 1);
            }
        }
        Some(KeySlot {
            counts: self.counts.clone(),
            key: key.clone(),
        })
    }
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let Some(open) = counts.streams.get_mut(&self.key) else {
            return;
        };
        *open -= 1;
        if *open == 0 {
            counts.streams.remove(&self.key);
            if let Some(keys) = counts.keys.get_mut(&self.key.route.index) {
                *keys -= 1;
                if *keys == 0 {
                    counts.keys.remove(&self.key.route.index);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(route: usize, param: &str) -> StreamKey {
        StreamKey::for_tests(route, crate::config::Mode::Snapshot, vec![param.to_owned()])
    }

    #[test]
    fn new_keys_beyond_the_bound_are_refused_and_known_ones_join() {
        let counts = KeyCounts::default();
        let a = counts.take(&key(0, "a"), 2).expect("first key");
        let b = counts.take(&key(0, "b"), 2).expect("second key");
        assert!(counts.take(&key(0, "c"), 2).is_none(), "third key refused");
        let a2 = counts.take(&key(0, "a"), 2).expect("a known key joins");
        assert!(counts.take(&key(1, "c"), 2).is_some(), "routes count apart");
        drop(a);
        assert!(counts.take(&key(0, "c"), 2).is_none(), "a is still open");
        drop(a2);
        let c = counts.take(&key(0, "c"), 2).expect("a's place is free");
        drop((b, c));
        assert!(counts.lock().streams.is_empty() && counts.lock().keys.is_empty());
    }
}
