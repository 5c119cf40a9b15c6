//! Seeding for the random number generators behind jitter.
//!
//! Every source of chance in redial is a xoshiro256++ generator seeded from a `u64`, so a test
//! or a simulation that fixes the seed replays the same delays, on any platform (rand's
//! `SmallRng` would not promise that: its algorithm depends on the target and may change).
//! Without a seed we take one from std's randomly keyed hasher: random enough for jitter, no
//! syscall per schedule, no extra crate.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

/// A fresh, unpredictable seed.
pub(crate) fn random_seed() -> u64 {
    RandomState::new().hash_one(0x5eed_u64)
}

/// Mixes a base seed with a stream number so that related generators (one per peer) do not
/// produce correlated sequences. This is the SplitMix64 finaliser.
pub(crate) fn derive_seed(base: u64, stream: u64) -> u64 {
    let mut z = base.wrapping_add(stream.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub(crate) fn generator(seed: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed)
}

/// A uniform sample in `[0, 1)` with 53 bits of precision.
pub(crate) fn unit(rng: &mut Xoshiro256PlusPlus) -> f64 {
    use rand::Rng;
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}
