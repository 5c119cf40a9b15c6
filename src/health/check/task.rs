//! The checker's task, which the user spawns, and the handle that steers it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::HealthCheck;
use super::builder::Config;
use super::run::check_loop;
use super::set::{BoxFuture, TaskSet};
use super::verdict::CheckReport;
use crate::peers::{PeerHandle, PeerKey};

/// Starts the loop of one peer; erases the check's type, so that the task's is `CheckerTask<K>`.
type StartLoop<K> = Box<dyn Fn(PeerHandle<K>, u64) -> BoxFuture + Send + Sync>;

/// The peers a checker watches and their reports, shared by the task and the handles.
pub(super) struct Registry<K> {
    inner: Mutex<Inner<K>>,
}

struct Inner<K> {
    peers: HashMap<K, Entry>,
    /// Numbers the peers in the order they are added: a peer removed and added again is a new
    /// entry, whose loop must not take reports from the old one.
    next_generation: u64,
}

struct Entry {
    generation: u64,
    report: CheckReport,
}

impl<K: PeerKey> Registry<K> {
    fn lock(&self) -> MutexGuard<'_, Inner<K>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `key` unless it is watched already; returns its generation.
    fn add(&self, key: K) -> Option<u64> {
        let mut inner = self.lock();
        if inner.peers.contains_key(&key) {
            return None;
        }
        let generation = inner.next_generation;
        inner.next_generation += 1;
        inner.peers.insert(
            key,
            Entry {
                generation,
                report: CheckReport::new(),
            },
        );
        Some(generation)
    }

    /// The loop of `generation` checked `key`: its report replaces the one kept, unless the
    /// peer was removed (and maybe added again) meanwhile.
    pub(super) fn publish(&self, key: &K, generation: u64, report: &CheckReport) {
        if let Some(entry) = self.lock().peers.get_mut(key) {
            if entry.generation == generation {
                entry.report = report.clone();
            }
        }
    }
}

enum Command<K> {
    Add(PeerHandle<K>, u64),
    Remove(K),
}

/// The future that runs a [`Checker`](super::Checker)'s checks: spawn it
/// (`tokio::spawn(task)`) or poll it yourself. redial spawns nothing.
///
/// All peers are checked concurrently inside it, each on its own schedule, so a slow check
/// holds up no other peer's. It finishes once every [`CheckerHandle`] is dropped; peers that
/// the checks had ejected are restored then (and when they are removed), since nothing else
/// would end an ejection by check. Dropping the task stops the checks the same way.
#[must_use = "the checks run only while the task is polled: spawn it"]
pub struct CheckerTask<K> {
    commands: mpsc::UnboundedReceiver<Command<K>>,
    loops: TaskSet<K>,
    start: StartLoop<K>,
}

/// Adds and removes the peers a running checker watches, and reports their status. Clones
/// steer the same checker; its task ends when the last one is dropped.
pub struct CheckerHandle<K> {
    registry: Arc<Registry<K>>,
    commands: mpsc::UnboundedSender<Command<K>>,
}

impl<K> Clone for CheckerHandle<K> {
    fn clone(&self) -> Self {
        Self {
            registry: Arc::clone(&self.registry),
            commands: self.commands.clone(),
        }
    }
}

impl<K: PeerKey> CheckerTask<K> {
    pub(super) fn new<C>(
        check: Arc<C>,
        config: Config,
        peers: impl IntoIterator<Item = PeerHandle<K>>,
    ) -> (Self, CheckerHandle<K>)
    where
        C: HealthCheck<K> + Send + Sync + 'static,
    {
        let registry = Arc::new(Registry {
            inner: Mutex::new(Inner {
                peers: HashMap::new(),
                next_generation: 0,
            }),
        });
        let config = Arc::new(config);
        let start: StartLoop<K> = {
            let registry = Arc::clone(&registry);
            Box::new(move |peer, generation| {
                check_loop(
                    Arc::clone(&check),
                    Arc::clone(&config),
                    Arc::clone(&registry),
                    peer,
                    generation,
                )
            })
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let mut task = Self {
            commands: rx,
            loops: TaskSet::new(),
            start,
        };
        for peer in peers {
            if let Some(generation) = registry.add(peer.key().clone()) {
                let key = peer.key().clone();
                task.loops.insert(key, (task.start)(peer, generation));
            }
        }
        let handle = CheckerHandle {
            registry,
            commands: tx,
        };
        (task, handle)
    }
}

// Nothing inside is ever pinned in place (the loops are boxed), whatever `K` is.
impl<K> Unpin for CheckerTask<K> {}

impl<K: PeerKey> Future for CheckerTask<K> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this.commands.poll_recv(cx) {
                Poll::Ready(Some(Command::Add(peer, generation))) => {
                    let key = peer.key().clone();
                    this.loops.insert(key, (this.start)(peer, generation));
                }
                Poll::Ready(Some(Command::Remove(key))) => {
                    this.loops.remove(&key);
                }
                Poll::Ready(None) => {
                    // Every handle is gone: stop, and hand the peers back (see `Run`'s drop).
                    this.loops.clear();
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
        }
        this.loops.poll(cx);
        Poll::Pending
    }
}

impl<K: PeerKey> CheckerHandle<K> {
    /// Starts checking `peer`, its first check one (jittered) interval from now. Returns
    /// `false`, changing nothing, if the peer is checked already or the task was dropped.
    pub fn add(&self, peer: PeerHandle<K>) -> bool {
        let key = peer.key().clone();
        let Some(generation) = self.registry.add(key.clone()) else {
            return false;
        };
        if self.commands.send(Command::Add(peer, generation)).is_err() {
            // The task is gone: nothing would check the peer.
            self.registry.lock().peers.remove(&key);
            return false;
        }
        true
    }

    /// Stops checking the peer of `key`; an ejection the checks made ends. Returns whether it
    /// was checked.
    pub fn remove(&self, key: &K) -> bool {
        if self.registry.lock().peers.remove(key).is_none() {
            return false;
        }
        let _ = self.commands.send(Command::Remove(key.clone()));
        true
    }

    /// The checks' record of the peer of `key`, if it is checked.
    pub fn status(&self, key: &K) -> Option<CheckReport> {
        let inner = self.registry.lock();
        inner.peers.get(key).map(|entry| entry.report.clone())
    }

    /// The peers checked, with their records, in no particular order.
    pub fn statuses(&self) -> Vec<(K, CheckReport)> {
        let inner = self.registry.lock();
        inner
            .peers
            .iter()
            .map(|(key, entry)| (key.clone(), entry.report.clone()))
            .collect()
    }

    /// Whether the task still runs: `false` once it was dropped.
    pub fn is_running(&self) -> bool {
        !self.commands.is_closed()
    }
}

impl<K: fmt::Debug> fmt::Debug for CheckerTask<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckerTask").finish_non_exhaustive()
    }
}

impl<K: PeerKey> fmt::Debug for CheckerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peers: Vec<K> = self.registry.lock().peers.keys().cloned().collect();
        f.debug_struct("CheckerHandle")
            .field("peers", &peers)
            .finish_non_exhaustive()
    }
}
