//! The explorer's random numbers: SplitMix64, written here so that a seed gives the same
//! schedules whatever version of a random-number crate the build resolves.

/// A deterministic generator: the same seed, the same numbers, on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The generator of schedule `index` of a run seeded with `seed`: each schedule is a
    /// function of the two alone, so schedules can run in any order or in parallel.
    pub fn for_schedule(seed: u64, index: u32) -> Rng {
        let mut r = Rng(seed ^ (u64::from(index).wrapping_add(1)).wrapping_mul(0xa076_1d64_78bd_642f));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(1, 100) <= percent
    }

    /// One of `items`, each as likely as its weight (None when all weights are zero).
    pub fn weighted<'a, T>(&mut self, items: &'a [(T, u32)]) -> Option<&'a T> {
        let total: u64 = items.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return None;
        }
        let mut at = self.range(0, total - 1);
        for (item, w) in items {
            if at < u64::from(*w) {
                return Some(item);
            }
            at -= u64::from(*w);
        }
        None
    }

    /// One of `items` (None when empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.range(0, items.len() as u64 - 1) as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_numbers_and_schedules_differ() {
        let a: Vec<u64> = (0..5).map(|_| Rng::new(7).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        // SplitMix64's published first output for seed 0
        assert_eq!(Rng::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        let s0: Vec<u64> = (0..4).scan(Rng::for_schedule(7, 0), |r, _| Some(r.next_u64())).collect();
        let s1: Vec<u64> = (0..4).scan(Rng::for_schedule(7, 1), |r, _| Some(r.next_u64())).collect();
        assert_ne!(s0, s1);
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            let v = r.range(3, 8);
            assert!((3..=8).contains(&v));
        }
        let picks: Vec<&str> = (0..200).filter_map(|_| r.weighted(&[("a", 1), ("b", 0), ("c", 3)]).copied()).collect();
        assert!(!picks.contains(&"b") && picks.contains(&"a") && picks.contains(&"c"));
        assert_eq!(r.weighted::<u8>(&[(1, 0)]), None);
    }
}
