//! Stream slots counted per key: per validated user (`max_streams_per_user`) and per client
//! address (`max_streams_per_ip`), so that neither one user nor one client takes the whole
//! pool. A key's entry lives only while it holds a slot, so the map is bounded by
//! `max_streams`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open streams by key, each key held to `max`.
pub struct KeyedSlots<K> {
    /// Open streams per key; a key with none has no entry.
    counts: Arc<Mutex<HashMap<K, usize>>>,
    /// Streams one key may hold at once.
    max: usize,
}

impl<K: Hash + Eq + Clone> KeyedSlots<K> {
    /// No slot taken yet; at most `max` (at least 1) per key.
    pub fn new(max: usize) -> KeyedSlots<K> {
        KeyedSlots {
            counts: Arc::default(),
            max,
        }
    }

    /// The limit per key.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Takes one of `key`'s slots, or `None` when it holds `max` already.
    pub fn take(&self, key: &K) -> Option<KeyedSlot<K>> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let open = counts.entry(key.clone()).or_default();
        if *open >= self.max {
            return None;
        }
        *open += 1;
        Some(KeyedSlot {
            counts: self.counts.clone(),
            key: key.clone(),
        })
    }
}

/// One slot of a key, given back when the stream's body is dropped.
pub struct KeyedSlot<K: Hash + Eq> {
    /// The map it is counted in.
    counts: Arc<Mutex<HashMap<K, usize>>>,
    /// Whose slot it is.
    key: K,
}

impl<K: Hash + Eq> Drop for KeyedSlot<K> {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(open) = counts.get_mut(&self.key) {
            *open -= 1;
            if *open == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

/// A validated user's stream slot.
pub type UserSlot = KeyedSlot<String>;

/// A client address's stream slot.
pub type PeerSlot = KeyedSlot<IpAddr>;

/// The address a client's streams are counted under: IPv4 as is (also when it arrives as an
/// IPv4-mapped IPv6 address), IPv6 by its /64, since one IPv6 host usually holds a whole /64
/// and could otherwise take a fresh address per stream.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_to_its_max_and_forgotten_when_it_holds_none() {
        let slots = KeyedSlots::new(2);
        let a = "a".to_owned();
        let first = slots.take(&a).expect("first");
        let second = slots.take(&a).expect("second");
        assert!(slots.take(&a).is_none(), "over the limit");
        assert!(
            slots.take(&"b".to_owned()).is_some(),
            "other keys are not affected"
        );
        drop(first);
        let third = slots.take(&a).expect("a slot came back");
        drop((second, third));
        assert!(slots.counts.lock().expect("lock").is_empty());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let next: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(one), client_key(other));
        assert_ne!(client_key(one), client_key(next));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(
            client_key(mapped),
            "192.0.2.7".parse::<IpAddr>().expect("ip")
        );
    }
}
