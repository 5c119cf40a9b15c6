//! The success-rate window: outcomes over the last `window`, in a ring of time buckets, counted
//! without a lock.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::time::Instant;

use super::policy::SuccessRate;

/// Buckets in the ring: the window slides by a tenth of its length.
const BUCKETS: usize = 10;
/// Each bucket is one `u64`: the bucket's slot number (24 bits, wrapping) above two 20-bit
/// counts, so that moving a bucket on to a new slot and counting in it is one compare-and-swap.
const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const TAG_SHIFT: u32 = 2 * COUNT_BITS;
const TAG_MASK: u64 = (1 << (64 - TAG_SHIFT)) - 1;
/// The most of each outcome a window counts.
const MAX_EACH: u64 = BUCKETS as u64 * COUNT_MAX;

/// The most outcomes a window can hold and still trip at `min_rate`: every failure it can
/// count, plus the most successes that leave the share under `min_rate`. A `min_requests`
/// above it could never be reached, so the policy's builder refuses it.
pub(crate) fn max_trippable(min_rate: f64) -> u64 {
    let under = |successes: u64| is_under(min_rate, successes, successes + MAX_EACH);
    if under(MAX_EACH) {
        return 2 * MAX_EACH;
    }
    if !under(0) {
        return 0;
    }
    // The share only falls as failures rise, so all of them count. The share of successes
    // rises with them: search for the last count still under, with the very comparison
    // `failure` makes, so the two cannot disagree by a rounding.
    let (mut low, mut high) = (0, MAX_EACH);
    while high - low > 1 {
        let mid = low + (high - low) / 2;
        if under(mid) {
            low = mid;
        } else {
            high = mid;
        }
    }
    MAX_EACH + low
}

/// Whether `successes` of `total` is a share under `min_rate`: what trips a window.
fn is_under(min_rate: f64, successes: u64, total: u64) -> bool {
    (successes as f64) < min_rate * total as f64
}

/// Outcomes that ended over the last `window`, shared by a layer's services and clones.
///
/// Lock-free: recording is one compare-and-swap on the current bucket; judging the rate reads
/// the ten buckets. A bucket counts up to about a million of each outcome (past that it stops
/// counting, which only matters above some 300 000 requests a second per layer with a 30 s
/// window). The slot tag wraps after 2^24 slots; a bucket untouched for exactly a multiple of
/// that could be mistaken for a current one, once, which a rate can live with.
#[derive(Debug)]
pub(crate) struct Window {
    buckets: [AtomicU64; BUCKETS],
    bucket_nanos: u64,
    epoch: Instant,
    min_rate: f64,
    min_requests: u64,
}

impl Window {
    pub(crate) fn new(rate: SuccessRate, epoch: Instant) -> Self {
        let nanos = u64::try_from(rate.window.as_nanos()).unwrap_or(u64::MAX);
        Self {
            buckets: Default::default(),
            bucket_nanos: (nanos / BUCKETS as u64).max(1),
            epoch,
            min_rate: rate.min_rate,
            min_requests: u64::from(rate.min_requests),
        }
    }

    /// Counts a success.
    pub(crate) fn success(&self, now: Instant) {
        self.record(now, 1 << COUNT_BITS);
    }

    /// Counts a failure; returns whether the window now trips: at least `min_requests`
    /// outcomes, and a share of successes under `min_rate`.
    pub(crate) fn failure(&self, now: Instant) -> bool {
        let tag = self.record(now, 1);
        let (mut successes, mut failures) = (0, 0);
        for bucket in &self.buckets {
            let word = bucket.load(Relaxed);
            if (tag.wrapping_sub(word >> TAG_SHIFT) & TAG_MASK) < BUCKETS as u64 {
                successes += (word >> COUNT_BITS) & COUNT_MAX;
                failures += word & COUNT_MAX;
            }
        }
        let total = successes + failures;
        total >= self.min_requests && is_under(self.min_rate, successes, total)
    }

    /// Forgets every outcome: after an ejection the peer starts with a clean slate.
    pub(crate) fn clear(&self) {
        for bucket in &self.buckets {
            bucket.store(0, Relaxed);
        }
    }

    /// Adds `one` (a success or a failure, in place) to the current bucket, moving the bucket
    /// on to the current slot first if it held an older one. Returns the current slot's tag.
    fn record(&self, now: Instant, one: u64) -> u64 {
        let elapsed =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let slot = elapsed / self.bucket_nanos;
        let tag = slot & TAG_MASK;
        let bucket = &self.buckets[(slot % BUCKETS as u64) as usize];
        let _ = bucket.fetch_update(Relaxed, Relaxed, |word| {
            let counts = if word >> TAG_SHIFT == tag {
                word & ((1 << TAG_SHIFT) - 1)
            } else {
                0
            };
            let field = if one == 1 {
                counts & COUNT_MAX
            } else {
                counts >> COUNT_BITS
            };
            let counts = if field == COUNT_MAX {
                counts
            } else {
                counts + one
            };
            Some((tag << TAG_SHIFT) | counts)
        });
        tag
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn window(min_rate: f64, secs: u64, min_requests: u32) -> (Window, Instant) {
        let epoch = Instant::now();
        let rate = SuccessRate {
            min_rate,
            window: Duration::from_secs(secs),
            min_requests,
        };
        (Window::new(rate, epoch), epoch)
    }

    #[test]
    fn trips_only_with_enough_requests_and_a_low_rate() {
        let (w, t) = window(0.8, 10, 10);
        for _ in 0..6 {
            w.success(t);
        }
        // 6 of 9: under 0.8, but under the volume.
        assert!(!w.failure(t));
        assert!(!w.failure(t));
        assert!(!w.failure(t));
        // 6 of 10: trips.
        assert!(w.failure(t));
        w.clear();
        assert!(!w.failure(t));
    }

    #[test]
    fn a_rate_at_the_threshold_does_not_trip() {
        let (w, t) = window(0.8, 10, 5);
        for _ in 0..8 {
            w.success(t);
        }
        assert!(!w.failure(t));
        // 8 of 10 is 0.8: not under it.
        assert!(!w.failure(t));
        assert!(w.failure(t));
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let (w, t) = window(0.5, 10, 4);
        for _ in 0..3 {
            assert!(!w.failure(t));
        }
        // 10 s later the three failures are gone: one failure is under the volume.
        let later = t + Duration::from_secs(10);
        assert!(!w.failure(later));
        // Within the window they still count.
        let (w, t) = window(0.5, 10, 4);
        for _ in 0..3 {
            assert!(!w.failure(t));
        }
        assert!(w.failure(t + Duration::from_millis(8_999)));
    }

    #[test]
    fn a_bucket_reused_for_a_new_slot_starts_from_zero() {
        let (w, t) = window(0.5, 10, 3);
        assert!(!w.failure(t));
        assert!(!w.failure(t));
        // Same bucket, ten slots on: the old two are not counted.
        let later = t + Duration::from_secs(10);
        w.success(later);
        w.success(later);
        assert!(!w.failure(later), "1 failure of 3 is above 0.5");
    }

    /// `max_trippable` agrees with the window itself: full of failures, with the most
    /// successes it allows, a window trips; with one success more, or one outcome more than
    /// it allows as `min_requests`, it cannot.
    #[test]
    fn the_largest_trippable_window_trips_and_no_larger_one_can() {
        for (rate, most) in [
            (1.0, 20_971_500),
            (0.8, 20_971_500),
            (0.5, 20_971_499),
            (0.1, 11_650_833),
        ] {
            assert_eq!(max_trippable(rate), most, "at {rate}");
            let successes = most - MAX_EACH;
            for (extra, trips) in [(0, true), (1, false)] {
                let (w, epoch) = window(rate, 10, u32::try_from(most).unwrap());
                // Ten buckets, each with its own slot of the last ten, full of failures.
                let mut left = successes + extra;
                for (i, bucket) in w.buckets.iter().enumerate() {
                    let here = left.min(COUNT_MAX);
                    left -= here;
                    bucket.store(
                        ((i as u64) << TAG_SHIFT) | (here << COUNT_BITS) | COUNT_MAX,
                        Relaxed,
                    );
                }
                if left > 0 {
                    continue; // more successes than a window counts: nothing to check
                }
                let now = epoch + Duration::from_secs(9);
                assert_eq!(w.failure(now), trips, "at {rate} with {extra} more");
            }
        }
    }

    #[test]
    fn counts_saturate_instead_of_spilling_into_the_other_count() {
        let (w, t) = window(0.5, 10, 1);
        let bucket = &w.buckets[0];
        bucket.store(COUNT_MAX, Relaxed);
        assert!(w.failure(t));
        assert_eq!(bucket.load(Relaxed) & COUNT_MAX, COUNT_MAX);
        assert_eq!((bucket.load(Relaxed) >> COUNT_BITS) & COUNT_MAX, 0);
    }
}
