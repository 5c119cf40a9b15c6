//! Cost of the `Peers` hot path (issue #2): time and allocations per recorded outcome for
//! tables of 1, 1 000 and 100 000 peers, and bytes per tracked peer.
//!
//! Run with `cargo bench --bench peers`; BENCHMARKS.md holds the figures and how to read them.
//!
//! - `handle::*` records through a `PeerHandle`, as layers do; `by_key::*` goes through
//!   `Peers::record_*(&key)`, which looks the peer up in the table first.
//! - Tables are built once per size, outside the timed part. Each iteration records for the next
//!   peer of a fixed shuffled order, so a large table is touched all over and its cache misses
//!   are counted, not hidden by hitting one hot peer.
//! - `baseline::*` shows what the bare primitives cost on the same machine: an atomic, a lock,
//!   the clock (tokio's and std's), a small per-peer lock, and one cache line of atomics per
//!   peer walked in the same shuffled order, with and without a clock read: the floor the
//!   tracker's layout (outcome counters alone in one line) can reach at each table size.
//! - `one_peer::*` records on one peer of each table, again and again: the table's size alone,
//!   with no cold peer, so that growth in `handle::*` can be told apart from growth in the code.
//! - `threads::*` has two threads record for two different peers, to show what the peers share.
//! - `memory::*` times nothing of interest: it is there for the allocation figures, from which
//!   BENCHMARKS.md derives bytes per tracked peer.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use divan::{Bencher, black_box};
use redial::peers::{PeerHandle, Peers};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

/// Table sizes every per-record benchmark runs at.
const SIZES: [usize; 3] = [1, 1_000, 100_000];

/// Well above the largest size, so that no insert evicts.
const CAPACITY: usize = 200_000;

/// What a failed request reports. Passed as `&dyn Display`, as layers do.
const ERROR: &str = "connection reset by peer";

fn main() {
    divan::main();
}

/// A table of `n` peers keyed `0..n`, with a handle to each.
fn table(n: usize) -> (Peers<u64>, Vec<PeerHandle<u64>>) {
    let peers = Peers::<u64>::builder()
        .capacity(CAPACITY)
        .seed(2)
        .build()
        .expect("valid configuration");
    let handles = (0..n as u64)
        .map(|key| peers.peer(key).expect("below capacity"))
        .collect();
    (peers, handles)
}

/// The error as callers hand it over. `black_box` keeps the compiler from seeing through the
/// `dyn`, which it could otherwise do once the generic `record_failure` is inlined here.
fn error() -> &'static dyn Display {
    black_box(&ERROR)
}

/// Hands out `items` round and round in a fixed pseudo-random order.
struct Cycle<T> {
    items: Vec<T>,
    next: usize,
}

impl<T> Cycle<T> {
    fn shuffled(mut items: Vec<T>) -> Self {
        // Fisher–Yates with splitmix64: deterministic, and no extra dependency.
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for i in (1..items.len()).rev() {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            items.swap(i, (z % (i as u64 + 1)) as usize);
        }
        Self { items, next: 0 }
    }

    fn next(&mut self) -> &T {
        let i = self.next;
        self.next = if i + 1 == self.items.len() { 0 } else { i + 1 };
        &self.items[i]
    }
}

/// Through a `PeerHandle`: no table lookup, one uncontended per-peer lock.
mod handle {
    use super::*;

    #[divan::bench(args = SIZES)]
    fn record_success(bencher: Bencher, n: usize) {
        let (_peers, handles) = table(n);
        let mut handles = Cycle::shuffled(handles);
        bencher.bench_local(|| handles.next().record_success());
    }

    /// A peer that is `Idle` stays `Idle` on a request failure (only counters and the last
    /// error change), so no event is published and the registry lock is never taken: this is
    /// the whole cost of a failure, not the cost of a state change.
    #[divan::bench(args = SIZES)]
    fn record_failure(bencher: Bencher, n: usize) {
        let (_peers, handles) = table(n);
        // Warm-up: a peer's last-error buffer is reserved on its first failure, once, by design.
        // The steady state is what is measured here; `memory::first_failure` shows that cost.
        for handle in &handles {
            handle.record_failure(error());
        }
        let mut handles = Cycle::shuffled(handles);
        bencher.bench_local(|| handles.next().record_failure(error()));
    }
}

/// Through `Peers::record_*(&key)`: a read lock on the table and a hash lookup come first.
mod by_key {
    use super::*;

    fn keys(n: usize) -> Cycle<u64> {
        Cycle::shuffled((0..n as u64).collect())
    }

    #[divan::bench(args = SIZES)]
    fn record_success(bencher: Bencher, n: usize) {
        let (peers, handles) = table(n);
        // Callers of the by-key path hold no handles.
        drop(handles);
        let mut keys = keys(n);
        bencher.bench_local(|| assert!(peers.record_success(keys.next())));
    }

    /// As for `handle::record_failure`, the peer stays `Idle`: counters only, no event.
    #[divan::bench(args = SIZES)]
    fn record_failure(bencher: Bencher, n: usize) {
        let (peers, handles) = table(n);
        drop(handles);
        for key in 0..n as u64 {
            assert!(peers.record_failure(&key, error()));
        }
        let mut keys = keys(n);
        bencher.bench_local(|| assert!(peers.record_failure(keys.next(), error())));
    }
}

/// One peer of a table of `n`, recorded on again and again: what the table's size alone costs a
/// record, with the memory hierarchy held still (the peer stays in cache at every size). Beside
/// `handle` and `by_key`, which walk the whole table, this splits the growth they show into
/// what the code does with a larger table (here) and what a cold peer costs (there).
mod one_peer {
    use super::*;

    #[divan::bench(args = SIZES)]
    fn handle_record_success(bencher: Bencher, n: usize) {
        let (_peers, handles) = table(n);
        let handle = &handles[n / 2];
        bencher.bench_local(|| handle.record_success());
    }

    #[divan::bench(args = SIZES)]
    fn handle_record_failure(bencher: Bencher, n: usize) {
        let (_peers, handles) = table(n);
        let handle = &handles[n / 2];
        handle.record_failure(error());
        bencher.bench_local(|| handle.record_failure(error()));
    }

    #[divan::bench(args = SIZES)]
    fn by_key_record_success(bencher: Bencher, n: usize) {
        let (peers, handles) = table(n);
        drop(handles);
        let key = (n / 2) as u64;
        bencher.bench_local(|| assert!(peers.record_success(black_box(&key))));
    }
}

/// The primitives the hot path is made of, for comparison.
mod baseline {
    use super::*;

    #[divan::bench]
    fn atomic_fetch_add() -> u64 {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        black_box(&COUNTER).fetch_add(1, Ordering::Relaxed)
    }

    #[divan::bench]
    fn mutex_increment(bencher: Bencher) {
        let counter = Mutex::new(0_u64);
        bencher.bench_local(|| *black_box(&counter).lock().unwrap() += 1);
    }

    /// `record_*` read the clock once per call, through tokio's `Instant` (which the crate uses
    /// so that a paused test clock applies).
    #[divan::bench]
    fn tokio_instant_now() -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    /// One small heap-allocated `Mutex<u64>` per peer (32 bytes), visited in the same shuffled
    /// order as the `handle` benchmarks.
    #[divan::bench(args = SIZES)]
    fn mutex_per_peer(bencher: Bencher, n: usize) {
        let counters = (0..n).map(|_| Arc::new(Mutex::new(0_u64))).collect();
        let mut counters = Cycle::shuffled(counters);
        bencher.bench_local(|| *counters.next().lock().unwrap() += 1);
    }

    /// What tokio's clock costs without its `test-util` feature: std's clock. Benchmarks are
    /// built with the dev-dependencies' features, so `tokio_instant_now` above includes the
    /// paused-clock check that production builds do not have.
    #[divan::bench]
    fn std_instant_now() -> std::time::Instant {
        std::time::Instant::now()
    }

    /// A per-peer record laid out as a tracker's outcome counters: one cache line of atomics.
    #[repr(align(64))]
    #[derive(Default)]
    struct Line {
        count: AtomicU64,
        stamp: AtomicU64,
        streak: AtomicU32,
        flag: AtomicBool,
    }

    fn lines(n: usize) -> Cycle<Arc<Line>> {
        Cycle::shuffled((0..n).map(|_| Arc::new(Line::default())).collect())
    }

    /// What `record_success` does to its peer, minus the library.
    fn touch(line: &Line, stamp: u64) -> bool {
        line.count.fetch_add(1, Ordering::Relaxed);
        line.streak.store(0, Ordering::Relaxed);
        line.stamp.store(stamp, Ordering::Relaxed);
        line.flag.load(Ordering::Relaxed)
    }

    /// The memory floor of the current layout: one cold line per record at 100 000 peers.
    #[divan::bench(args = SIZES)]
    fn line_per_peer(bencher: Bencher, n: usize) {
        let mut lines = lines(n);
        bencher.bench_local(|| touch(lines.next(), 1));
    }

    /// The same with the clock read first, as `record_success` does: the floor
    /// `handle::record_success` should be compared with.
    #[divan::bench(args = SIZES)]
    fn clock_then_line_per_peer(bencher: Bencher, n: usize) {
        let mut lines = lines(n);
        bencher.bench_local(|| {
            black_box(tokio::time::Instant::now());
            touch(lines.next(), 1)
        });
    }
}

/// Two threads recording for two different peers of a 1 000-peer table. Nothing per peer is
/// shared, so any slowdown from 1 to 2 threads comes from what all peers share: the table's
/// totals (one atomic counter per kind of outcome) and, by key, the table's read lock.
mod threads {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    const N: usize = 1_000;

    /// This thread's own item of `items`: benchmark threads get different ones.
    fn mine<T>(items: &[T]) -> &T {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        thread_local!(static SLOT: usize = NEXT.fetch_add(1, Ordering::Relaxed));
        &items[SLOT.with(|slot| *slot) % items.len()]
    }

    #[divan::bench(threads = [1, 2])]
    fn handle_record_success(bencher: Bencher) {
        let (_peers, handles) = table(N);
        bencher.bench(|| mine(&handles).record_success());
    }

    #[divan::bench(threads = [1, 2])]
    fn by_key_record_success(bencher: Bencher) {
        let (peers, _handles) = table(N);
        let keys: Vec<u64> = (0..N as u64).collect();
        bencher.bench(|| assert!(peers.record_success(mine(&keys))));
    }

    /// Two threads incrementing one shared atomic: the price of a contended cache line here.
    #[divan::bench(threads = [1, 2])]
    fn shared_atomic_fetch_add() -> u64 {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        black_box(&COUNTER).fetch_add(1, Ordering::Relaxed)
    }
}

/// For allocation figures: divan reports the bytes allocated and freed per iteration.
mod memory {
    use super::*;

    fn empty_table() -> Peers<u64> {
        table(0).0
    }

    /// Tracks `n` new peers in an empty table. Bytes allocated minus bytes freed, divided by
    /// `n`, is the memory per tracked peer (the table is dropped outside the measurement).
    #[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
    fn insert_peers(bencher: Bencher, n: usize) {
        bencher.with_inputs(empty_table).bench_local_refs(|peers| {
            for key in 0..n as u64 {
                drop(black_box(peers.peer(key).expect("below capacity")));
            }
        });
    }

    /// The first failure of each of `n` peers: reserves each peer's last-error buffer
    /// (`error_text_limit`, 256 bytes by default), the one allocation a peer makes after insert.
    #[divan::bench(args = SIZES, sample_count = 10, sample_size = 1)]
    fn first_failure(bencher: Bencher, n: usize) {
        bencher
            .with_inputs(|| table(n))
            .bench_local_refs(|(_, handles)| {
                for handle in handles.iter() {
                    handle.record_failure(error());
                }
            });
    }
}
