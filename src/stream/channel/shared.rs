//! What cluster mode asks of a channel: apply another instance's changes, converge on the
//! shared snapshot, start from a rebuilt state before any subscriber has, and say how its
//! state differs from the shared one.

use super::Channel;
use crate::stream::state::{SharedChange, State};

impl Channel {
    /// Applies changes another instance published for `source`; returns whether this
    /// channel's state now has the id the publisher computed (when not, it must converge).
    pub fn apply_shared(&self, source: usize, changes: &[SharedChange]) -> bool {
        let (consistent, wakers) = {
            let mut inner = self.lock();
            inner.state.apply(&self.key.route, source, changes);
            let consistent = changes
                .last()
                .is_none_or(|last| last.id == inner.state.id());
            (consistent, inner.drain_wakers())
        };
        wakers.wake();
        consistent
    }

    /// Publishes whatever turns this channel's state into `current` (the shared snapshot).
    pub fn converge(&self, current: &[SharedChange]) {
        let wakers = {
            let mut inner = self.lock();
            inner.full = None;
            inner.state.converge(&self.key.route, current);
            inner.drain_wakers()
        };
        wakers.wake();
    }

    /// Starts from `state` (rebuilt from the shared history) if no subscriber has started
    /// yet, so their `Last-Event-ID`s are looked up in it; returns whether it did.
    pub fn install_if_fresh(&self, state: State) -> bool {
        let mut inner = self.lock();
        if inner.started {
            return false;
        }
        inner.full = None;
        inner.state = state;
        true
    }

    /// What turns `target` into this channel's state (see [`State::diff_from`]).
    pub fn diff_from(&self, target: &[SharedChange]) -> Vec<SharedChange> {
        self.lock().state.diff_from(target)
    }

    /// The current state's hash (its id as a number).
    pub fn state_hash(&self) -> u128 {
        self.lock().state.hash()
    }

    /// Marks every source answered: a follower's state is as live as its holder's.
    pub fn all_answered(&self) {
        for source in 0..self.key.route.sources.len() {
            self.answered(source);
        }
    }
}
