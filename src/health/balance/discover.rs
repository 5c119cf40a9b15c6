//! [`HealthDiscover`]: the balancer's view of a set of peers, following their health.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::discover::Change;

use super::builder::Settings;
use super::endpoint::Endpoint;
use super::handle::{Control, DiscoverHandle};
use crate::peers::{EjectionCause, HealthReport, PeerHandle, PeerKey, PeerState, Peers};
use crate::time::deadline;

/// Waits for the next change of the health report; hands the receiver back, or `None` once
/// the table is gone. Boxed because `watch::Receiver::changed` is an `async fn`: one
/// allocation per change of the counts, none per request.
type HealthChange =
    Pin<Box<dyn Future<Output = Option<watch::Receiver<HealthReport>>> + Send + Sync>>;

/// Watch changes taken in one poll before yielding: the report changes only as peers change
/// state, so more than this in one go means something is flapping, not that work is left.
const MAX_CHANGES_PER_POLL: usize = 8;

/// A [`Discover`](tower::discover::Discover) for tower's balancers that follows the health of
/// a set of peers and never loses one.
///
/// It yields [`Change::Insert`] for each usable peer, [`Change::Remove`] when a peer is ejected
/// or its connect attempts are exhausted, and `Insert` again when it comes back:
///
/// | the peer is | the balancer has it |
/// |---|---|
/// | idle, connecting, connected, in backoff | yes: its `poll_ready` pending is how the balancer learns it is not ready yet |
/// | ejected as an outlier, the ejection's time running | no; inserted again when the time is over |
/// | ejected as an outlier, the time over | yes, so that the balancer sends the probe that decides it; removed again if the probe fails |
/// | ejected by an active check or by hand | no, until restored |
/// | exhausted | no; after `exhausted_cooldown` the discover resets it and inserts it again |
///
/// A removed peer's service is not dropped: the balancer hands it back (see [`Endpoint`]) and
/// the same service, with its connection and its layers' state, is inserted again later.
/// A service the balancer dropped on its own (its `poll_ready` failed, which tower's balancers
/// punish with eviction) is replaced by a new one from the `make` closure after `recheck`.
///
/// No task and no busy loop: the discover wakes on [`Peers::watch_health`] (which changes
/// whenever a peer changes state; the discover then looks at its own peers only, never at the
/// whole table) and on one timer, armed for the earliest ejection or cool-down to end. Peers
/// out for no known time (ejected by a check or by hand) are looked at again every `recheck`
/// besides, so that a change the report does not show (a peer restored straight into
/// exhaustion) cannot strand one.
///
/// See the [module documentation](super) for an example.
pub struct HealthDiscover<K: PeerKey, S, F> {
    make: F,
    entries: Vec<Entry<K, S>>,
    next_id: u64,
    settings: Settings,
    started: bool,
    changes: VecDeque<Change<K, Endpoint<S>>>,
    returns_tx: UnboundedSender<(u64, S)>,
    returns: UnboundedReceiver<(u64, S)>,
    control_tx: UnboundedSender<Control<K>>,
    control: UnboundedReceiver<Control<K>>,
    health: Option<HealthChange>,
    timer: Option<Pin<Box<Sleep>>>,
    /// The earliest `due` of any entry.
    next_due: Option<Instant>,
    /// Entries lent to the balancer while ejected, for their probe: looked at on every poll,
    /// since a failed probe ejects the peer again without changing the health report.
    probing: usize,
}

struct Entry<K, S> {
    id: u64,
    peer: PeerHandle<K>,
    slot: Slot<S>,
    /// When to look at the peer again, if it is out for a known time.
    due: Option<Instant>,
    /// Not inserted before this: the balancer dropped the last service on its own.
    hold_until: Option<Instant>,
    probing: bool,
    /// `probing`, as the peer's endpoints in the balancer see it (their load).
    probing_flag: Arc<AtomicBool>,
    /// Removed through a handle: dropped once the balancer has let go of its service.
    forget: bool,
}

/// Where a peer's service is.
enum Slot<S> {
    /// Here, not in the balancer.
    Parked(S),
    /// In the balancer.
    Lent,
    /// Removed from the balancer, not handed back yet.
    Returning,
}

/// What the discover wants for a peer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    In,
    /// In, for the probe of an outlier ejection whose time is over.
    Probe,
    /// Out until then, or for no known time.
    Out(Option<Instant>),
}

impl<K, S, F> HealthDiscover<K, S, F>
where
    K: PeerKey,
    F: FnMut(&PeerHandle<K>) -> S,
{
    /// A discover over `handles` with the default settings (see [`HealthDiscoverBuilder`](super::HealthDiscoverBuilder)),
    /// making each peer's service with `make`. `peers` is the table the handles come from.
    pub fn new(
        peers: &Peers<K>,
        handles: impl IntoIterator<Item = PeerHandle<K>>,
        make: F,
    ) -> Self {
        Self::from_settings(peers, handles, make, Settings::default())
    }

    pub(super) fn from_settings(
        peers: &Peers<K>,
        handles: impl IntoIterator<Item = PeerHandle<K>>,
        make: F,
        settings: Settings,
    ) -> Self {
        let (returns_tx, returns) = mpsc::unbounded_channel();
        let (control_tx, control) = mpsc::unbounded_channel();
        let mut discover = Self {
            make,
            entries: Vec::new(),
            next_id: 0,
            settings,
            started: false,
            changes: VecDeque::new(),
            returns_tx,
            returns,
            control_tx,
            control,
            health: Some(health_change(peers.watch_health())),
            timer: None,
            next_due: None,
            probing: 0,
        };
        for handle in handles {
            discover.add(handle);
        }
        discover
    }

    /// A handle to add and remove peers once the balancer owns the discover.
    pub fn handle(&self) -> DiscoverHandle<K> {
        DiscoverHandle::new(self.control_tx.clone())
    }

    /// Peers balanced over (inserted or not).
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| !e.forget).count()
    }

    /// Whether there is no peer to balance over.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add(&mut self, peer: PeerHandle<K>) {
        if self
            .entries
            .iter()
            .any(|e| !e.forget && e.peer.key() == peer.key())
        {
            return;
        }
        let service = (self.make)(&peer);
        self.next_id += 1;
        self.entries.push(Entry {
            id: self.next_id,
            peer,
            slot: Slot::Parked(service),
            due: None,
            hold_until: None,
            probing: false,
            probing_flag: Arc::default(),
            forget: false,
        });
        if self.started {
            let last = self.entries.len() - 1;
            self.evaluate(last, Instant::now());
        }
    }

    fn remove(&mut self, key: &K) {
        let Some(i) = self
            .entries
            .iter()
            .position(|e| !e.forget && e.peer.key() == key)
        else {
            return;
        };
        let entry = &mut self.entries[i];
        entry.forget = true;
        self.set_probing(i, false);
        match self.entries[i].slot {
            Slot::Parked(_) => {
                self.entries.swap_remove(i);
            }
            Slot::Lent => {
                self.entries[i].slot = Slot::Returning;
                self.changes.push_back(Change::Remove(key.clone()));
            }
            Slot::Returning => {}
        }
    }

    /// The balancer let go of a service: park it, or replace it if it was dropped unasked.
    fn returned(&mut self, id: u64, service: S, now: Instant) {
        let Some(i) = self.entries.iter().position(|e| e.id == id) else {
            return;
        };
        if self.entries[i].forget {
            self.entries.swap_remove(i);
            return;
        }
        self.set_probing(i, false);
        let entry = &mut self.entries[i];
        match entry.slot {
            Slot::Returning => entry.slot = Slot::Parked(service),
            Slot::Lent | Slot::Parked(_) => {
                // The balancer evicted it (its `poll_ready` failed): a new service, after a
                // pause so that one failing at once cannot make a loop of it.
                drop(service);
                let fresh = (self.make)(&entry.peer);
                entry.slot = Slot::Parked(fresh);
                entry.hold_until = Some(deadline(now, self.settings.recheck));
                tracing::debug!(peer = ?entry.peer.key(), "balancer dropped the peer's service; a new one replaces it");
            }
        }
        self.evaluate(i, now);
    }

    /// What the discover wants for `peer` now. May reset an exhausted peer whose cool-down is
    /// over.
    fn want(&self, peer: &PeerHandle<K>, now: Instant) -> Want {
        match peer.ejection() {
            Some((Some(until), EjectionCause::Outlier)) if now >= until => return Want::Probe,
            Some((Some(until), EjectionCause::Outlier)) => return Want::Out(Some(until)),
            Some(_) => return Want::Out(None),
            None => {}
        }
        if peer.state() != PeerState::Exhausted {
            return Want::In;
        }
        let Some(cooldown) = self.settings.exhausted_cooldown else {
            return Want::Out(None);
        };
        let at = deadline(peer.exhausted_at().unwrap_or(now), cooldown);
        if now < at {
            return Want::Out(Some(at));
        }
        // The peer's clock, so every discover and reconnect of the peer agrees; a reset the
        // peer has had meanwhile makes this one a no-op.
        peer.reset();
        Want::In
    }

    /// Brings the balancer's view of entry `i` in line with its peer's state.
    fn evaluate(&mut self, i: usize, now: Instant) {
        let mut want = self.want(&self.entries[i].peer, now);
        let entry = &mut self.entries[i];
        if let Some(hold) = entry.hold_until {
            if now < hold && want != Want::Out(None) {
                want = Want::Out(Some(hold));
            } else if now >= hold {
                entry.hold_until = None;
            }
        }
        entry.due = match want {
            Want::Out(Some(at)) => Some(at),
            Want::Out(None) => Some(deadline(now, self.settings.recheck)),
            Want::In | Want::Probe => None,
        };
        match (want, &entry.slot) {
            (Want::In | Want::Probe, Slot::Parked(_)) => {
                if let Slot::Parked(service) = std::mem::replace(&mut entry.slot, Slot::Lent) {
                    let endpoint = Endpoint::new(
                        service,
                        entry.id,
                        self.returns_tx.clone(),
                        Arc::clone(&entry.probing_flag),
                    );
                    self.changes
                        .push_back(Change::Insert(entry.peer.key().clone(), endpoint));
                }
            }
            (Want::Out(_), Slot::Lent) => {
                entry.slot = Slot::Returning;
                self.changes
                    .push_back(Change::Remove(entry.peer.key().clone()));
            }
            _ => {}
        }
        let probing = want == Want::Probe && matches!(self.entries[i].slot, Slot::Lent);
        self.set_probing(i, probing);
    }

    fn set_probing(&mut self, i: usize, probing: bool) {
        let entry = &mut self.entries[i];
        if entry.probing != probing {
            entry.probing = probing;
            entry.probing_flag.store(probing, Ordering::Relaxed);
            if probing {
                self.probing += 1;
            } else {
                self.probing -= 1;
            }
        }
    }

    fn evaluate_all(&mut self, now: Instant) {
        for i in 0..self.entries.len() {
            if !self.entries[i].forget {
                self.evaluate(i, now);
            }
        }
    }

    /// Whether the health report changed since last time; re-arms the wait for the next change.
    fn poll_health(&mut self, cx: &mut Context<'_>) -> bool {
        let mut changed = false;
        for _ in 0..MAX_CHANGES_PER_POLL {
            let Some(wait) = &mut self.health else {
                return changed;
            };
            match wait.as_mut().poll(cx) {
                Poll::Ready(Some(rx)) => {
                    changed = true;
                    self.health = Some(health_change(rx));
                }
                Poll::Ready(None) => self.health = None,
                Poll::Pending => return changed,
            }
        }
        // Still changing: look again on the next poll rather than keep the thread.
        cx.waker().wake_by_ref();
        changed
    }

    /// The earliest time an entry is due to be looked at again.
    fn earliest_due(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| !e.forget)
            .filter_map(|e| e.due)
            .min()
    }

    /// Polls the one timer, armed for the earliest due entry.
    fn poll_timer(&mut self, cx: &mut Context<'_>) {
        let Some(at) = self.next_due else {
            return;
        };
        let timer = self.timer.get_or_insert_with(|| Box::pin(sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        if timer.as_mut().poll(cx).is_ready() {
            // Due already: have the task polled again rather than sleep without a wake-up.
            cx.waker().wake_by_ref();
        }
    }
}

fn health_change(mut rx: watch::Receiver<HealthReport>) -> HealthChange {
    Box::pin(async move { rx.changed().await.ok().map(|()| rx) })
}

impl<K, S, F> Stream for HealthDiscover<K, S, F>
where
    K: PeerKey,
    F: FnMut(&PeerHandle<K>) -> S,
{
    type Item = Result<Change<K, Endpoint<S>>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(change) = this.changes.pop_front() {
            return Poll::Ready(Some(Ok(change)));
        }
        let now = Instant::now();
        let mut touched = false;
        if !this.started {
            this.started = true;
            this.evaluate_all(now);
            touched = true;
        }
        while let Poll::Ready(Some(control)) = this.control.poll_recv(cx) {
            match control {
                Control::Add(peer) => this.add(peer),
                Control::Remove(key) => this.remove(&key),
            }
            touched = true;
        }
        while let Poll::Ready(Some((id, service))) = this.returns.poll_recv(cx) {
            this.returned(id, service, now);
            touched = true;
        }
        if this.poll_health(cx) {
            this.evaluate_all(now);
            touched = true;
        } else if this.next_due.is_some_and(|due| now >= due) {
            for i in 0..this.entries.len() {
                let entry = &this.entries[i];
                if !entry.forget && entry.due.is_some_and(|due| now >= due) {
                    this.evaluate(i, now);
                }
            }
            touched = true;
        }
        if this.probing > 0 {
            for i in 0..this.entries.len() {
                if this.entries[i].probing {
                    this.evaluate(i, now);
                }
            }
            touched = true;
        }
        if touched {
            this.next_due = this.earliest_due();
        }
        this.poll_timer(cx);
        match this.changes.pop_front() {
            Some(change) => Poll::Ready(Some(Ok(change))),
            None => Poll::Pending,
        }
    }
}

// Nothing is pinned in place: every field is moved or reached through `&mut` only.
impl<K: PeerKey, S, F> Unpin for HealthDiscover<K, S, F> {}

impl<K: PeerKey, S, F> fmt::Debug for HealthDiscover<K, S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for entry in self.entries.iter().filter(|e| !e.forget) {
            let slot = match entry.slot {
                Slot::Parked(_) => "parked",
                Slot::Lent => "in balancer",
                Slot::Returning => "being removed",
            };
            list.entry(&(entry.peer.key(), slot));
        }
        list.finish()
    }
}
