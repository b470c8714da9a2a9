//! A [`State`] shared with other instances (cluster mode): applying another instance's
//! changes, converging on a snapshot, and rebuilding history and state from what Redis keeps.
//!
//! Ids are content hashes, so two instances with the same slots have the same id whatever
//! order they learnt them in; a follower checks its id after each batch against the one the
//! publisher computed, and converges on the shared snapshot when they differ.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Entry, Names, Slot, State, state_id};
use crate::config::StreamConfig;
use crate::stream::delta::Change;
use crate::stream::sse;

/// One change as instances share it: the slot, its new value (or removal), and the id of the
/// state after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedChange {
    /// The source within the route.
    pub source: usize,
    /// The item key, or `None` for a snapshot source's document.
    pub key: Option<String>,
    /// The new value's content hash and canonical JSON; `None`: removed.
    pub new: Option<(u128, String)>,
    /// The state's id after this change, as its publisher computed it.
    pub id: String,
}

impl State {
    /// The current state's id (what the last event's `id:` says when nothing was removed since).
    pub fn id(&self) -> String {
        state_id(self.state_hash)
    }

    /// The content hash of `slot`'s current value, 0 when it has none.
    fn slot_hash(&self, slot: &Slot) -> u128 {
        self.latest
            .get(slot)
            .and_then(|seq| self.live.get(seq))
            .map_or(0, |entry| entry.hash)
    }

    /// Applies changes another instance published for `source`, skipping those this state
    /// already has (so applying a batch twice, or one this instance made itself, sends
    /// nothing). Ids are computed here, from this state's content.
    pub fn apply(&mut self, route: &StreamConfig, source: usize, changes: &[SharedChange]) {
        let local: Vec<Change> = changes
            .iter()
            .filter_map(|change| {
                let old_hash = self.slot_hash(&(source, change.key.clone()));
                let new_hash = change.new.as_ref().map_or(0, |(hash, _)| *hash);
                (old_hash != new_hash).then(|| Change {
                    key: change.key.clone(),
                    old_hash,
                    new: change.new.clone(),
                })
            })
            .collect();
        self.publish(route, source, local);
    }

    /// Publishes what turns this state into `target` (every live slot, all sources): the
    /// removal of slots `target` lacks, then every slot whose value differs. Subscribers get
    /// exactly those events, so converging costs them no resync.
    pub fn converge(&mut self, route: &StreamConfig, target: &[SharedChange]) {
        let wanted: HashMap<Slot, u128> = target
            .iter()
            .filter_map(|c| Some(((c.source, c.key.clone()), c.new.as_ref()?.0)))
            .collect();
        let mut by_source: Vec<Vec<Change>> = vec![Vec::new(); route.sources.len()];
        for entry in self.live.values() {
            if let Some(slot) = &entry.slot
                && !wanted.contains_key(slot)
                && let Some(changes) = by_source.get_mut(slot.0)
            {
                changes.push(Change {
                    key: slot.1.clone(),
                    old_hash: entry.hash,
                    new: None,
                });
            }
        }
        for change in target {
            let slot = (change.source, change.key.clone());
            let old_hash = self.slot_hash(&slot);
            if let (Some((hash, json)), Some(changes)) = (&change.new, by_source.get_mut(slot.0))
                && *hash != old_hash
            {
                changes.push(Change {
                    key: slot.1,
                    old_hash,
                    new: Some((*hash, json.clone())),
                });
            }
        }
        for (source, changes) in by_source.into_iter().enumerate() {
            self.publish(route, source, changes);
        }
        // Converging is also the repair: whatever drift there was, the ids from here on are
        // the content's.
        self.state_hash = self.live_hash();
    }

    /// The state hash (what [`State::id`] shows in hex).
    pub fn hash(&self) -> u128 {
        self.state_hash
    }

    /// What turns `target` (a shared snapshot's live slots) into this state: the removal of
    /// the slots this state lacks, then this state's slots whose value differs, with values
    /// read back from their frames and ids running from `target`'s. What a holder writes to a
    /// Redis that lost the key or kept an older state (empty when they agree).
    pub fn diff_from(&self, target: &[SharedChange]) -> Vec<SharedChange> {
        let target_hashes: HashMap<Slot, u128> = target
            .iter()
            .filter_map(|c| Some(((c.source, c.key.clone()), c.new.as_ref()?.0)))
            .collect();
        let mut hash = target_hashes
            .values()
            .fold(0u128, |sum, h| sum.wrapping_add(*h));
        let mut changes = Vec::new();
        for (slot, old) in &target_hashes {
            if self.slot_hash(slot) == 0 {
                hash = hash.wrapping_sub(*old);
                changes.push(SharedChange {
                    source: slot.0,
                    key: slot.1.clone(),
                    new: None,
                    id: state_id(hash),
                });
            }
        }
        for entry in self.live.values() {
            let Some(slot) = &entry.slot else { continue };
            let old = target_hashes.get(slot).copied().unwrap_or(0);
            if old == entry.hash {
                continue;
            }
            let Some(json) = sse::data_of(&entry.frame) else {
                continue;
            };
            hash = hash.wrapping_sub(old).wrapping_add(entry.hash);
            changes.push(SharedChange {
                source: slot.0,
                key: slot.1.clone(),
                new: Some((entry.hash, json)),
                id: state_id(hash),
            });
        }
        changes
    }

    /// A state rebuilt from what another instance left: `current`, the live slots in
    /// publication order with the ids they were published with, and `history`, the latest
    /// changes in order (possibly only the tail of what happened). A client whose id is in
    /// `history` resumes exactly; the current state is `current`.
    pub fn rebuild(
        route: &StreamConfig,
        history_events: usize,
        history_bytes: usize,
        current: &[SharedChange],
        history: &[SharedChange],
    ) -> State {
        let mut state = State::new(history_events, history_bytes);
        // The current slots first, as live entries outside the history (no client can
        // resume from their ids: the states between them were never seen whole)...
        for change in current {
            let (Some(names), Some((hash, json))) = (Names::of(route, change.source), &change.new)
            else {
                continue;
            };
            let slot = (change.source, change.key.clone());
            let (frame, hash) = names.frame(&slot, Some((*hash, json)), &change.id);
            let seq = state.next_seq;
            state.next_seq += 1;
            let entry = Arc::new(Entry {
                seq,
                slot: Some(slot.clone()),
                id: Some(change.id.clone()),
                hash,
                frame,
            });
            if let Some(old) = state.latest.insert(slot, seq) {
                state.live.remove(&old);
            }
            state.live.insert(seq, entry);
        }
        // ...then the history replayed over them, ending on the same values.
        for change in history {
            if let Some(names) = Names::of(route, change.source) {
                let new = change
                    .new
                    .as_ref()
                    .map(|(hash, json)| (*hash, json.as_str()));
                let slot = (change.source, change.key.clone());
                state.append(&names, slot, new, change.id.clone());
            }
        }
        state.state_hash = state.live_hash();
        state
    }

    /// The sum of the live slots' hashes: what the state hash is when nothing drifted.
    fn live_hash(&self) -> u128 {
        self.live
            .values()
            .fold(0u128, |sum, entry| sum.wrapping_add(entry.hash))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::route;
    use super::*;
    use crate::stream::state::Since;

    /// An item key and its new value (`None`: removed).
    type Set = (Option<String>, Option<(u128, String)>);

    fn set(key: &str, hash: u128) -> Set {
        (
            Some(key.into()),
            Some((hash, format!("{{\"k\":\"{key}\",\"v\":{hash}}}"))),
        )
    }

    /// Publishes `changes` on `state` as a holder would, returning them as shared.
    fn publish(state: &mut State, changes: &[Set]) -> Vec<SharedChange> {
        let route = route();
        let mut shared = Vec::new();
        for (key, new) in changes {
            let old_hash = state.slot_hash(&(0, key.clone()));
            state.publish(
                &route,
                0,
                vec![Change {
                    key: key.clone(),
                    old_hash,
                    new: new.clone(),
                }],
            );
            shared.push(SharedChange {
                source: 0,
                key: key.clone(),
                new: new.clone(),
                id: state.id(),
            });
        }
        shared
    }

    #[test]
    fn a_follower_applying_a_holders_changes_has_its_ids_and_skips_what_it_has() {
        let route = route();
        let mut holder = State::new(100, 1 << 20);
        let mut follower = State::new(100, 1 << 20);
        let batch = publish(&mut holder, &[set("a", 1), set("b", 2)]);
        follower.apply(&route, 0, &batch);
        assert_eq!(follower.id(), holder.id());
        let sent = follower.next_seq();
        follower.apply(&route, 0, &batch);
        assert_eq!(follower.next_seq(), sent, "applied twice, sent once");
        let removal = publish(&mut holder, &[(Some("a".into()), None)]);
        follower.apply(&route, 0, &removal);
        assert_eq!(follower.id(), holder.id());
    }

    #[test]
    fn converging_sends_only_the_difference() {
        let route = route();
        let mut truth = State::new(100, 1 << 20);
        let target = publish(&mut truth, &[set("a", 1), set("b", 2)]);
        let mut stale = State::new(100, 1 << 20);
        publish(&mut stale, &[set("a", 1), set("c", 3)]);
        let before = stale.next_seq();
        let current: Vec<SharedChange> =
            target.iter().filter(|c| c.new.is_some()).cloned().collect();
        stale.converge(&route, &current);
        assert_eq!(stale.id(), truth.id());
        assert_eq!(
            stale.next_seq() - before,
            2,
            "c removed, b set; a untouched"
        );
    }

    #[test]
    fn a_rebuilt_state_resumes_ids_from_its_history() {
        let route = route();
        let mut holder = State::new(100, 1 << 20);
        let old = publish(&mut holder, &[set("a", 1), set("b", 2)]);
        let history = publish(
            &mut holder,
            &[set("a", 5), (Some("b".into()), None), set("c", 7)],
        );
        let current = vec![
            SharedChange {
                source: 0,
                key: Some("a".into()),
                new: set("a", 5).1,
                id: history[0].id.clone(),
            },
            SharedChange {
                source: 0,
                key: Some("c".into()),
                new: set("c", 7).1,
                id: history[2].id.clone(),
            },
        ];
        let rebuilt = State::rebuild(&route, 100, 1 << 20, &current, &history);
        assert_eq!(rebuilt.id(), holder.id());
        let text = |since: Since| match since {
            Since::Frames(frames) => frames
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect::<String>(),
            Since::UpToDate => "up to date".into(),
            Since::Unknown => "unknown".into(),
        };
        let owed = text(rebuilt.since(&history[0].id));
        assert!(
            owed.contains("item_removed") && owed.contains("\"v\":7") && !owed.contains("\"v\":5"),
            "{owed}"
        );
        assert_eq!(text(rebuilt.since(&holder.id())), "up to date");
        assert_eq!(
            text(rebuilt.since(&old[1].id)),
            "unknown",
            "older than the history kept"
        );
    }
}
