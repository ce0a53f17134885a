//! The one seeded generator of the project's tests and simulator: every
//! random choice a test makes (the conformance suite's randomized scenario,
//! the simulator's fault plans, clocks and workloads) comes from a ChaCha8
//! stream of a seed, so a failure is reproduced from its seed and nothing
//! depends on OS entropy. Independent concerns draw from independent
//! streams of the same seed, so adding a draw in one never shifts another.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// A deterministic generator: one stream of one seed.
#[derive(Debug, Clone)]
pub struct SeededRng(ChaCha8Rng);

impl SeededRng {
    /// The generator of `stream` for `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        Self(rng)
    }

    /// Uniform in `[0, n)`; `n` must be positive.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no value to return");
        self.0.next_u64() % n
    }

    /// Uniform in `[lo, hi)`; `hi` must exceed `lo`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo, "empty range {lo}..{hi}");
        lo + self.below(hi - lo)
    }

    /// Uniform in `[lo, hi)` for signed values.
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        assert!(hi > lo, "empty range {lo}..{hi}");
        lo.wrapping_add(self.below(hi.abs_diff(lo)) as i64)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// One element of a slice, or `None` when it is empty.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| self.pick(items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_and_stream_give_the_same_draws_and_streams_differ() {
        let draws = |seed, stream| {
            let mut rng = SeededRng::new(seed, stream);
            (0..8).map(|_| rng.below(1_000_000)).collect::<Vec<_>>()
        };
        assert_eq!(draws(7, 1), draws(7, 1));
        assert_ne!(draws(7, 1), draws(7, 2));
        assert_ne!(draws(7, 1), draws(8, 1));
    }

    #[test]
    fn draws_stay_in_their_bounds() {
        let mut rng = SeededRng::new(1, 1);
        for _ in 0..1_000 {
            assert!((3..9).contains(&rng.range(3, 9)));
            assert!((-5..5).contains(&rng.range_i64(-5, 5)));
        }
        assert_eq!(rng.choose::<u8>(&[]), None);
        assert_eq!(rng.choose(&[4]), Some(&4));
    }
}
