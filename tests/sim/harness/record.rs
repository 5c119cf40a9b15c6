//! Records a `Peers` table's events inside a simulation: the trace that a rerun of the same
//! seed must repeat, and the "sometimes" coverage (which states and event kinds were reached).

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::time::Duration;

use redial::event::{Event, EventKind, RecvError, Subscription};
use redial::peers::{PeerKey, Peers};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What a sweep reached: names of peer states and of event kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    pub states: BTreeSet<&'static str>,
    pub kinds: BTreeSet<&'static str>,
}

impl Coverage {
    pub fn merge(&mut self, other: &Coverage) {
        self.states.extend(other.states.iter().copied());
        self.kinds.extend(other.kinds.iter().copied());
    }

    fn note(&mut self, kind: &EventKind) {
        self.kinds.insert(kind.name());
        if let EventKind::StateChanged { from, to } = kind {
            self.states.insert(from.name());
            self.states.insert(to.name());
        }
    }
}

/// An event as recorded: virtual milliseconds since the recorder started, and what happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub at: Duration,
    pub peer: String,
    pub kind: EventKind,
}

#[derive(Debug)]
struct Log<K> {
    subscription: Subscription<K>,
    /// The virtual time (since the start of the simulation) and tokio instant it started at.
    base: (Duration, Instant),
    events: Vec<Recorded>,
    coverage: Coverage,
    lagged: u64,
}

impl<K: PeerKey> Log<K> {
    fn drain(&mut self) {
        loop {
            match self.subscription.try_recv() {
                Ok(Some(Event { peer, at, kind })) => {
                    self.coverage.note(&kind);
                    self.events.push(Recorded {
                        at: self.base.0 + at.saturating_duration_since(self.base.1),
                        peer: format!("{peer:?}"),
                        kind,
                    });
                }
                Ok(None) | Err(RecvError::Closed) => return,
                Err(RecvError::Lagged(n)) => self.lagged += n,
            }
        }
    }
}

/// Drains a subscription every tick on a local task of the host it was started on.
#[derive(Debug)]
pub struct Recorder<K> {
    log: Rc<RefCell<Log<K>>>,
    task: JoinHandle<()>,
}

impl<K: PeerKey> Recorder<K> {
    /// Starts recording `peers`' events (call it inside a host or client).
    pub fn start(peers: &Peers<K>) -> Self {
        let log = Rc::new(RefCell::new(Log {
            subscription: peers.subscribe(),
            base: (super::now(), Instant::now()),
            events: Vec::new(),
            coverage: Coverage::default(),
            lagged: 0,
        }));
        let sink = Rc::clone(&log);
        let task = tokio::task::spawn_local(async move {
            loop {
                sink.borrow_mut().drain();
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        Self { log, task }
    }

    /// Takes in what was published since the last drain.
    pub fn flush(&self) {
        self.log.borrow_mut().drain();
    }

    /// The events so far, in order, with their virtual instants since the simulation started.
    pub fn events(&self) -> Vec<Recorded> {
        self.flush();
        self.log.borrow().events.clone()
    }

    /// Events lost because the recorder fell behind (the scenarios assert none).
    pub fn lagged(&self) -> u64 {
        self.flush();
        self.log.borrow().lagged
    }

    pub fn coverage(&self) -> Coverage {
        self.flush();
        self.log.borrow().coverage.clone()
    }
}

impl<K> Drop for Recorder<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One line per event: what a rerun of the same seed must repeat exactly.
pub fn trace(events: &[Recorded]) -> Vec<String> {
    events
        .iter()
        .map(|e| format!("{:>9?} {} {:?}", e.at, e.peer, e.kind))
        .collect()
}
