//! A set of futures polled by one task, each polled only when its own waker fired.
//!
//! The checker runs one never-ending loop per peer inside the task the user spawned. Polling
//! every loop whenever any timer fires would cost a poll per peer per check; here each loop
//! gets a waker of its own that queues it, so a wake-up polls just the loops that asked.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};

pub(super) type BoxFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

pub(super) struct TaskSet<K> {
    ids: HashMap<K, u64>,
    slots: HashMap<u64, Slot>,
    queue: Arc<Queue>,
    next_id: u64,
    /// Reused between polls, so that a wake-up does not allocate.
    batch: Vec<u64>,
}

struct Slot {
    future: BoxFuture,
    waker: Arc<SlotWaker>,
}

/// The ids woken since the last poll, and the waker of the task that polls the set.
#[derive(Default)]
struct Queue {
    woken: Mutex<Vec<u64>>,
    parent: Mutex<Option<Waker>>,
}

struct SlotWaker {
    id: u64,
    /// Whether the id is in the queue already: a future woken many times is polled once.
    queued: AtomicBool,
    queue: Arc<Queue>,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&self.queue.woken).push(self.id);
        // Woken outside the lock: the task may be polled on another thread at once.
        let parent = lock(&self.queue.parent).clone();
        if let Some(parent) = parent {
            parent.wake();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<K: Hash + Eq> TaskSet<K> {
    pub(super) fn new() -> Self {
        Self {
            ids: HashMap::new(),
            slots: HashMap::new(),
            queue: Arc::default(),
            next_id: 0,
            batch: Vec::new(),
        }
    }

    #[cfg(test)]
    fn contains(&self, key: &K) -> bool {
        self.ids.contains_key(key)
    }

    /// Adds `future` under `key`, dropping any future the key had; it is polled on the next
    /// poll of the set.
    pub(super) fn insert(&mut self, key: K, future: BoxFuture) {
        let id = self.next_id;
        self.next_id += 1;
        if let Some(old) = self.ids.insert(key, id) {
            self.slots.remove(&old);
        }
        let waker = Arc::new(SlotWaker {
            id,
            queued: AtomicBool::new(false),
            queue: Arc::clone(&self.queue),
        });
        waker.wake_by_ref();
        self.slots.insert(id, Slot { future, waker });
    }

    /// Drops the future under `key`; returns whether there was one.
    pub(super) fn remove(&mut self, key: &K) -> bool {
        match self.ids.remove(key) {
            Some(id) => self.slots.remove(&id).is_some(),
            None => false,
        }
    }

    /// Drops every future.
    pub(super) fn clear(&mut self) {
        self.ids.clear();
        self.slots.clear();
    }

    /// Polls the futures woken since the last call, once each. A future that finishes is
    /// dropped from the set.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>) {
        {
            let mut parent = lock(&self.queue.parent);
            if !parent.as_ref().is_some_and(|p| p.will_wake(cx.waker())) {
                *parent = Some(cx.waker().clone());
            }
        }
        std::mem::swap(&mut self.batch, &mut *lock(&self.queue.woken));
        let mut finished = false;
        for id in self.batch.drain(..) {
            // A stale id (its future was removed) finds no slot.
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            // Cleared before the poll, so a wake-up during it queues the future again.
            slot.waker.queued.store(false, Ordering::Release);
            let waker = Waker::from(Arc::clone(&slot.waker));
            if slot
                .future
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
            {
                self.slots.remove(&id);
                finished = true;
            }
        }
        if finished {
            self.ids.retain(|_, id| self.slots.contains_key(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Poll;

    /// Counts its polls; pending until told to finish.
    fn counted(polls: &Arc<AtomicUsize>, finish: &Arc<AtomicBool>) -> BoxFuture {
        let polls = Arc::clone(polls);
        let finish = Arc::clone(finish);
        Box::pin(std::future::poll_fn(move |cx| {
            polls.fetch_add(1, Ordering::SeqCst);
            if finish.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                // Keeps its waker where the test can reach it.
                WAKERS.with(|w| w.borrow_mut().push(cx.waker().clone()));
                Poll::Pending
            }
        }))
    }

    thread_local! {
        static WAKERS: std::cell::RefCell<Vec<Waker>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    #[test]
    fn only_woken_futures_are_polled() {
        let mut set = TaskSet::new();
        let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let never = Arc::new(AtomicBool::new(false));
        set.insert("a", counted(&a, &never));
        set.insert("b", counted(&b, &never));
        let parent = Waker::noop();
        let mut cx = Context::from_waker(parent);

        set.poll(&mut cx);
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));
        // Nothing woken: nothing polled.
        set.poll(&mut cx);
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (1, 1));

        // Wake `a`'s waker twice: polled once.
        let wakers = WAKERS.with(|w| std::mem::take(&mut *w.borrow_mut()));
        wakers[0].wake_by_ref();
        wakers[0].wake_by_ref();
        set.poll(&mut cx);
        assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (2, 1));

        // A removed future's waker is harmless.
        assert!(set.remove(&"b"));
        wakers[1].wake_by_ref();
        set.poll(&mut cx);
        assert_eq!(b.load(Ordering::SeqCst), 1);
        assert!(!set.contains(&"b"));
    }

    #[test]
    fn a_finished_future_leaves_the_set() {
        let mut set = TaskSet::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicBool::new(true));
        set.insert(1, counted(&polls, &done));
        set.poll(&mut Context::from_waker(Waker::noop()));
        assert!(!set.contains(&1));
    }
}
