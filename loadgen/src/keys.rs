//! Which actor each `action` request goes to: `--keys N --key-dist hot|uniform|zipf[:s]`.
//!
//! Everything here is deterministic per `--seed`: each connection gets its own generator, seeded
//! from the seed and the connection's global index, so a connection's sequence of keys does not
//! depend on timing (the interleaving of connections does).

use std::fmt;

/// Default Zipf exponent (the YCSB constant).
pub(crate) const ZIPF_EXPONENT_DEFAULT: f64 = 0.99;

/// `--key-dist`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum KeyDist {
    /// Every request to one actor.
    Hot,
    /// Every actor equally likely.
    Uniform,
    /// Actor of rank r (key index r-1) with probability proportional to 1/r^s.
    Zipf(f64),
}

impl fmt::Display for KeyDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDist::Hot => f.write_str("hot"),
            KeyDist::Uniform => f.write_str("uniform"),
            KeyDist::Zipf(s) => write!(f, "zipf:{s}"),
        }
    }
}

/// Parses `hot`, `uniform`, `zipf` or `zipf:S` (S > 0, at most 100).
pub(crate) fn parse_key_dist(text: &str) -> Result<KeyDist, String> {
    let bad =
        || format!("invalid key distribution `{text}`: expected hot, uniform, zipf or zipf:S");
    match text.trim() {
        "hot" => Ok(KeyDist::Hot),
        "uniform" => Ok(KeyDist::Uniform),
        "zipf" => Ok(KeyDist::Zipf(ZIPF_EXPONENT_DEFAULT)),
        other => {
            let exponent = other.strip_prefix("zipf:").ok_or_else(bad)?;
            let s: f64 = exponent.trim().parse().map_err(|_| bad())?;
            if !(s.is_finite() && s > 0.0 && s <= 100.0) {
                return Err(format!(
                    "invalid zipf exponent `{exponent}`: must be > 0 and <= 100"
                ));
            }
            Ok(KeyDist::Zipf(s))
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to pick keys.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) (Lemire's multiply-shift; the bias is below 2^-32 for n < 2^32).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Zipf distribution over 1..=n with exponent s > 0, sampled by rejection-inversion
/// (W. Hörmann, G. Derflinger, "Rejection-inversion to generate variates from monotone discrete
/// distributions", ACM TOMACS 6(3), 1996), the way Apache Commons' sampler does it: O(1) per
/// sample and memory, no table, exact for every n.
#[derive(Debug, Clone)]
pub(crate) struct ZipfSampler {
    n: f64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
}

impl ZipfSampler {
    pub(crate) fn new(n: u64, exponent: f64) -> ZipfSampler {
        assert!(n >= 1, "zipf over no elements");
        assert!(exponent > 0.0 && exponent.is_finite(), "zipf exponent");
        let mut sampler = ZipfSampler {
            n: n as f64,
            exponent,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
        };
        sampler.h_integral_x1 = sampler.h_integral(1.5) - 1.0;
        sampler.h_integral_n = sampler.h_integral(sampler.n + 0.5);
        sampler.s = 2.0 - sampler.h_integral_inverse(sampler.h_integral(2.5) - sampler.h(2.0));
        sampler
    }

    /// A rank in 1..=n; rank 1 is the most likely.
    pub(crate) fn sample(&self, rng: &mut SplitMix64) -> u64 {
        loop {
            // u is uniform in (h_integral_x1, h_integral_n].
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            // Accept at once in the region where the hat and the distribution agree closely,
            // otherwise compare against the exact bound.
            if k - x <= self.s || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    /// h(x) = 1/x^s.
    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    /// H(x) = (x^(1-s) - 1) / (1 - s), and log x for s = 1, computed stably around s = 1.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.exponent) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        // Rounding can push t just below -1, where log1p is undefined.
        let t = (x * (1.0 - self.exponent)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// log(1 + x) / x, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (exp(x) - 1) / x, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))
    }
}

/// One connection's key chooser: an index into the resolved actors.
#[derive(Debug, Clone)]
pub(crate) struct Picker {
    rng: SplitMix64,
    kind: PickKind,
}

#[derive(Debug, Clone)]
enum PickKind {
    One,
    Uniform(u64),
    Zipf(ZipfSampler),
}

impl Picker {
    /// The chooser for connection `connection` (global index) over `actors` actors.
    pub(crate) fn new(dist: KeyDist, actors: usize, seed: u64, connection: u64) -> Picker {
        // Decorrelate the connections' streams: one SplitMix64 step over a mixed seed.
        let mut mix = SplitMix64::new(seed ^ connection.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let rng = SplitMix64::new(mix.next_u64());
        let actors = actors as u64;
        let kind = match dist {
            _ if actors <= 1 => PickKind::One,
            KeyDist::Hot => PickKind::One,
            KeyDist::Uniform => PickKind::Uniform(actors),
            KeyDist::Zipf(s) => PickKind::Zipf(ZipfSampler::new(actors, s)),
        };
        Picker { rng, kind }
    }

    /// The index (0-based) of the next request's actor.
    pub(crate) fn pick(&mut self) -> usize {
        match &self.kind {
            PickKind::One => 0,
            PickKind::Uniform(n) => self.rng.below(*n) as usize,
            PickKind::Zipf(sampler) => (sampler.sample(&mut self.rng) - 1) as usize,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_distributions() {
        assert_eq!(parse_key_dist("hot"), Ok(KeyDist::Hot));
        assert_eq!(parse_key_dist("uniform"), Ok(KeyDist::Uniform));
        assert_eq!(parse_key_dist("zipf"), Ok(KeyDist::Zipf(0.99)));
        assert_eq!(parse_key_dist("zipf:1.2"), Ok(KeyDist::Zipf(1.2)));
        assert_eq!(KeyDist::Zipf(0.99).to_string(), "zipf:0.99");
        for bad in [
            "", "zipf:", "zipf:0", "zipf:-1", "zipf:nan", "zipf:inf", "normal", "zipf1",
        ] {
            assert!(parse_key_dist(bad).is_err(), "`{bad}` should be rejected");
        }
    }

    fn counts(n: u64, s: f64, seed: u64, samples: usize) -> Vec<u64> {
        let sampler = ZipfSampler::new(n, s);
        let mut rng = SplitMix64::new(seed);
        let mut counts = vec![0u64; n as usize];
        for _ in 0..samples {
            let k = sampler.sample(&mut rng);
            assert!((1..=n).contains(&k), "{k} out of 1..={n}");
            counts[(k - 1) as usize] += 1;
        }
        counts
    }

    #[test]
    fn zipf_frequencies_follow_the_law() {
        for (n, s) in [(10u64, 0.99), (100, 0.5), (1000, 1.0), (50, 1.5), (5, 3.0)] {
            let samples = 400_000;
            let counts = counts(n, s, 7, samples);
            let norm: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
            // The head ranks, where counts are large: strictly decreasing, and each within
            // 5 standard deviations of its expected count.
            let head = n.min(8) as usize;
            for rank in 1..=head {
                let p = (rank as f64).powf(-s) / norm;
                let expected = p * samples as f64;
                let sigma = (expected * (1.0 - p)).sqrt();
                let got = counts[rank - 1] as f64;
                assert!(
                    (got - expected).abs() <= 5.0 * sigma + 1.0,
                    "n={n} s={s} rank {rank}: got {got}, expected {expected:.0}"
                );
                if rank > 1 {
                    assert!(
                        counts[rank - 2] > counts[rank - 1],
                        "n={n} s={s}: rank {} not above rank {rank}: {:?}",
                        rank - 1,
                        &counts[..head]
                    );
                }
            }
            // Coarser: every decile of ranks gets less than the one before.
            if n >= 50 {
                let decile = (n / 10) as usize;
                let sums: Vec<u64> = counts.chunks(decile).map(|c| c.iter().sum()).collect();
                assert!(
                    sums.windows(2).all(|w| w[0] > w[1]),
                    "n={n} s={s}: {sums:?}"
                );
            }
        }
    }

    #[test]
    fn zipf_with_one_element_and_extremes() {
        assert!(counts(1, 0.99, 1, 1000).iter().all(|&c| c == 1000));
        // A steep exponent puts nearly everything on rank 1; a large n still works.
        let steep = counts(1_000_000, 5.0, 3, 10_000);
        assert!(steep[0] > 9_500, "{}", steep[0]);
        let sampler = ZipfSampler::new(u64::from(u32::MAX), 0.99);
        let mut rng = SplitMix64::new(5);
        for _ in 0..10_000 {
            assert!((1..=u64::from(u32::MAX)).contains(&sampler.sample(&mut rng)));
        }
    }

    #[test]
    fn deterministic_per_seed() {
        let run = |seed: u64, connection: u64| {
            let mut picker = Picker::new(KeyDist::Zipf(0.99), 1000, seed, connection);
            (0..1000).map(|_| picker.pick()).collect::<Vec<_>>()
        };
        assert_eq!(run(42, 0), run(42, 0));
        assert_eq!(run(42, 3), run(42, 3));
        assert_ne!(run(42, 0), run(43, 0));
        assert_ne!(run(42, 0), run(42, 1), "connections get different streams");
        assert_eq!(counts(100, 0.99, 9, 5000), counts(100, 0.99, 9, 5000));
    }

    #[test]
    fn uniform_and_hot_pickers() {
        let mut hot = Picker::new(KeyDist::Hot, 1, 1, 0);
        assert!((0..100).all(|_| hot.pick() == 0));
        let mut uniform = Picker::new(KeyDist::Uniform, 10, 1, 0);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            seen[uniform.pick()] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        let mut rng = SplitMix64::new(0);
        assert!((0..1000).all(|_| (0.0..1.0).contains(&rng.next_f64())));
    }
}
