//! A stream key's state as Redis keeps it, read in one script: the live slots, the history,
//! and where following starts.

use super::scripts::Snapshot;
use super::wire::{Notice, current_slots};
use crate::stream::channel::Channel;
use crate::stream::state::{SharedChange, State};

/// The key's shared state.
pub struct Shared {
    /// The live slots, in publication order.
    pub current: Vec<SharedChange>,
    /// The latest changes, oldest first.
    pub history: Vec<SharedChange>,
    /// The newest entry's id: following starts after it.
    pub last: String,
    /// Whether the newest entry was written by the lease's current holder, which writes on
    /// taking it: then the state is that holder's, not one left from before a partition.
    pub current_holder: bool,
}

impl Shared {
    /// Reads a snapshot; unreadable entries and fields are skipped.
    pub fn read(snapshot: Snapshot) -> Shared {
        let (state, entries, lease) = snapshot;
        let last = entries
            .first()
            .map_or_else(|| "0-0".to_owned(), |(id, _)| id.clone());
        let writer = entries.first().and_then(|(_, fields)| fields.get("h"));
        let current_holder = lease.is_some() && writer == lease.as_ref();
        let history = entries
            .into_iter()
            .rev()
            .filter_map(|(_, fields)| serde_json::from_str::<Notice>(fields.get("b")?).ok())
            .flat_map(|notice| notice.changes())
            .collect();
        Shared {
            current: current_slots(state),
            history,
            last,
            current_holder,
        }
    }

    /// Whether Redis keeps nothing for the key (new, expired, or Redis restarted).
    pub fn is_empty(&self) -> bool {
        self.current.is_empty() && self.history.is_empty()
    }

    /// The sum of the live slots' hashes: the state's id, as a number.
    pub fn hash(&self) -> u128 {
        self.current
            .iter()
            .filter_map(|c| c.new.as_ref())
            .fold(0u128, |sum, (hash, _)| sum.wrapping_add(*hash))
    }

    /// Makes a channel no subscriber has started on carry on from this state and history, so
    /// any client's id in it resumes exactly; returns whether it did.
    pub fn install(&self, channel: &Channel, history_events: usize, history_bytes: usize) -> bool {
        if self.is_empty() {
            return false;
        }
        let state = State::rebuild(
            channel.route(),
            history_events,
            history_bytes,
            &self.current,
            &self.history,
        );
        channel.install_if_fresh(state)
    }
}
