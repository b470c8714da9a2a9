//! What cluster mode asks of a channel: apply another instance's changes, converge on the
//! shared snapshot, or start from a rebuilt state before any subscriber has.

use std::task::Waker;

use super::Channel;
use crate::stream::state::{SharedChange, State};

impl Channel {
    /// Applies changes another instance published for `source`; returns whether this
    /// channel's state now has the id the publisher computed (when not, it must converge).
    pub fn apply_shared(&self, source: usize, changes: &[SharedChange]) -> bool {
        let (consistent, wakers) = {
            let mut inner = self.lock();
            inner.full = None;
            inner.state.apply(&self.key.route, source, changes);
            let consistent = changes
                .last()
                .is_none_or(|last| last.id == inner.state.id());
            (consistent, inner.drain_wakers())
        };
        wakers.into_iter().for_each(Waker::wake);
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
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Starts from `state` (rebuilt from the shared history) if no subscriber has started
    /// yet; otherwise converges on its current slots. Returns whether it was installed.
    pub fn install(&self, state: State, current: &[SharedChange]) -> bool {
        {
            let mut inner = self.lock();
            if !inner.started {
                inner.full = None;
                inner.state = state;
                return true;
            }
        }
        self.converge(current);
        false
    }

    /// The current state as changes from an empty one (see [`State::seed`]).
    pub fn seed(&self) -> Vec<SharedChange> {
        self.lock().state.seed()
    }

    /// The current state's id.
    pub fn state_id(&self) -> String {
        self.lock().state.id()
    }

    /// Marks every source answered: a follower's state is as live as its holder's.
    pub fn all_answered(&self) {
        for source in 0..self.key.route.sources.len() {
            self.answered(source);
        }
    }
}
