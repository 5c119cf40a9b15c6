//! The table of trackers and its index by state.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use super::state::{Origin, PeerState};
use super::tracker::Tracker;
use crate::error::CapacityError;

/// Trackers by key, and keys by state, so that totals, `peers_in` and the health report never
/// scan the table.
///
/// Lock order: a tracker's lock may be held while taking the registry's, never the other way
/// round. That is why eviction judges a peer by the index and by atomics, not by its lock.
#[derive(Debug)]
pub(crate) struct Registry<K> {
    map: HashMap<K, Arc<Tracker<K>>>,
    by_state: [HashSet<K>; 6],
    capacity: usize,
}

impl<K: Hash + Eq + Clone> Registry<K> {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            map: HashMap::new(),
            by_state: Default::default(),
            capacity,
        }
    }

    pub(crate) fn get<Q>(&self, key: &Q) -> Option<&Arc<Tracker<K>>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get(key)
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Adds a new, idle peer, evicting an unused discovered peer if the table is full.
    pub(crate) fn insert(&mut self, tracker: Arc<Tracker<K>>) -> Result<(), CapacityError> {
        if self.map.len() >= self.capacity && !self.evict_one() {
            return Err(CapacityError {
                capacity: self.capacity,
            });
        }
        self.by_state[PeerState::Idle.index()].insert(tracker.key.clone());
        self.map.insert(tracker.key.clone(), tracker);
        Ok(())
    }

    /// Removes a discovered peer that nothing but this table refers to: an idle one if there
    /// is one, else one that stopped trying (exhausted), else one waiting out a backoff that no
    /// layer will come back for. Static peers, peers a layer holds, and peers with an attempt
    /// or a connection under way are never evicted.
    ///
    /// Walks the candidate states' keys until it finds one: cheap while idle peers are
    /// evictable, linear in those states' sizes when the table is full of peers in use.
    fn evict_one(&mut self) -> bool {
        for state in [PeerState::Idle, PeerState::Exhausted, PeerState::Backoff] {
            let victim = self.by_state[state.index()]
                .iter()
                .find(|key| {
                    self.map.get(*key).is_some_and(|t| {
                        t.origin() == Origin::Discovered && Arc::strong_count(t) == 1
                    })
                })
                .cloned();
            if let Some(key) = victim {
                self.by_state[state.index()].remove(&key);
                self.map.remove(&key);
                return true;
            }
        }
        false
    }

    /// Removes `tracker`, currently in `state`, if it is the one stored under its key.
    pub(crate) fn remove(&mut self, tracker: &Arc<Tracker<K>>, state: PeerState) -> bool {
        let same = self
            .map
            .get(&tracker.key)
            .is_some_and(|stored| Arc::ptr_eq(stored, tracker));
        if same {
            self.map.remove(&tracker.key);
            self.by_state[state.index()].remove(&tracker.key);
        }
        same
    }

    pub(crate) fn move_state(&mut self, key: &K, from: PeerState, to: PeerState) {
        self.by_state[from.index()].remove(key);
        if self.map.contains_key(key) {
            self.by_state[to.index()].insert(key.clone());
        }
    }

    pub(crate) fn counts(&self) -> [usize; 6] {
        let mut counts = [0; 6];
        for (count, keys) in counts.iter_mut().zip(&self.by_state) {
            *count = keys.len();
        }
        counts
    }

    pub(crate) fn keys_in(&self, state: PeerState) -> Vec<K> {
        self.by_state[state.index()].iter().cloned().collect()
    }
}
