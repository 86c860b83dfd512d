//! Statistics for checking samplers and data sets: pair distances, means, integrated
//! autocorrelation times and histogram distances.

use std::path::PathBuf;

use crate::error::{DatasetError, Result, IN_MEMORY};

/// All pairwise distances of every sample, float64, shape `[N, M (M − 1) / 2]` row-major, pairs
/// ordered `(0,1), (0,2), …, (0,M−1), (1,2), …`.
///
/// `positions` is float32 `[N, M, n]` row-major (as in [`crate::ParticleDataset::positions`]).
///
/// # Errors
/// [`DatasetError::WrongShape`] when `positions.len()` is not a multiple of `M * n` or `M * n` is
/// 0.
pub fn pair_distances(positions: &[f32], n_particles: usize, n_dims: usize) -> Result<Vec<f64>> {
    let per = n_particles * n_dims;
    if per == 0 || !positions.len().is_multiple_of(per) {
        return Err(DatasetError::WrongShape {
            path: PathBuf::from(IN_MEMORY),
            object: "positions".into(),
            expected: format!("a multiple of M * n = {n_particles} * {n_dims} elements"),
            found: vec![positions.len() as u64],
        });
    }
    let n_pairs = n_particles * n_particles.saturating_sub(1) / 2;
    let mut out = Vec::with_capacity(positions.len() / per * n_pairs);
    for x in positions.chunks_exact(per) {
        for i in 0..n_particles {
            for j in i + 1..n_particles {
                let d2: f64 = (0..n_dims)
                    .map(|k| {
                        let d = x[i * n_dims + k] as f64 - x[j * n_dims + k] as f64;
                        d * d
                    })
                    .sum();
                out.push(d2.sqrt());
            }
        }
    }
    Ok(out)
}

/// The mean pair distance of every sample, `[N]`, for positions as in [`pair_distances`].
///
/// # Errors
/// As [`pair_distances`].
pub fn mean_pair_distances(
    positions: &[f32],
    n_particles: usize,
    n_dims: usize,
) -> Result<Vec<f64>> {
    let n_pairs = (n_particles * n_particles.saturating_sub(1) / 2).max(1);
    Ok(pair_distances(positions, n_particles, n_dims)?
        .chunks_exact(n_pairs)
        .map(|p| p.iter().sum::<f64>() / n_pairs as f64)
        .collect())
}

/// The energy of every sample of float32 positions `[N, M, n]` (`M` and `n` from `energy`).
pub fn energies(energy: &(impl crate::Energy + ?Sized), positions: &[f32]) -> Vec<f64> {
    let per = (energy.n_particles() * energy.n_dims()).max(1);
    positions
        .chunks_exact(per)
        .map(|x| energy.energy(&x.iter().map(|&v| v as f64).collect::<Vec<_>>()))
        .collect()
}

/// De-interleaves a per-sample series of [`crate::metropolis`]'s output (sample `s` from chain
/// `s % n_chains`) into one series per chain, for
/// [`integrated_autocorrelation_time_chains`].
pub fn per_chain(v: &[f64], n_chains: usize) -> Vec<Vec<f64>> {
    (0..n_chains.max(1))
        .map(|k| v.iter().skip(k).step_by(n_chains.max(1)).copied().collect())
        .collect()
}

/// Mean and sample standard deviation (divisor `len − 1`) of `xs`. Returns `(NaN, NaN)` for an
/// empty slice and a standard deviation of 0 for a single value.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if xs.len() == 1 {
        return (mean, 0.0);
    }
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Integrated autocorrelation time `τ = 1 + 2 Σ_{t=1}^{W} ρ(t)` of one series, in steps of the
/// series, with Sokal's automatic window (the smallest `W` with `W ≥ 5 τ(W)`; A. Sokal, "Monte
/// Carlo Methods in Statistical Mechanics", 1996, section 3). Same as
/// [`integrated_autocorrelation_time_chains`] with one chain.
pub fn integrated_autocorrelation_time(series: &[f64]) -> f64 {
    integrated_autocorrelation_time_chains(&[series])
}

/// Integrated autocorrelation time of several independent chains of the same process, pooled:
/// the autocovariance at lag `t` is `C(t) = Σ_c Σ_i (x_{c,i} − μ)(x_{c,i+t} − μ) / Σ_c L_c` with
/// `μ` the mean over all chains, `ρ(t) = C(t) / C(0)`, and the window is chosen as in
/// [`integrated_autocorrelation_time`]. Lags go up to the shortest chain length − 1; if the
/// window condition is never met there, the value at the largest lag is returned (an
/// underestimate: make the chains longer).
///
/// The effective sample size of `N` samples is about `N / τ`. Returns NaN when there is no value
/// or the series has zero variance.
pub fn integrated_autocorrelation_time_chains<S: AsRef<[f64]>>(chains: &[S]) -> f64 {
    let total: usize = chains.iter().map(|c| c.as_ref().len()).sum();
    if total == 0 {
        return f64::NAN;
    }
    let mean = chains.iter().flat_map(|c| c.as_ref().iter()).sum::<f64>() / total as f64;
    let autocov = |t: usize| -> f64 {
        let mut s = 0.0;
        for c in chains {
            let c = c.as_ref();
            if c.len() > t {
                s += c
                    .iter()
                    .zip(&c[t..])
                    .map(|(a, b)| (a - mean) * (b - mean))
                    .sum::<f64>();
            }
        }
        s / total as f64
    };
    let c0 = autocov(0);
    if c0 <= 0.0 || !c0.is_finite() {
        return f64::NAN;
    }
    let max_lag = chains
        .iter()
        .map(|c| c.as_ref().len())
        .min()
        .unwrap_or(0)
        .saturating_sub(1);
    let mut tau = 1.0;
    for t in 1..=max_lag {
        tau += 2.0 * autocov(t) / c0;
        if t as f64 >= 5.0 * tau {
            break;
        }
    }
    tau
}

/// A histogram with `n_bins` equal bins on `[lo, hi)` and one extra cell for values outside it
/// (below `lo`, at or above `hi`, or NaN).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Lower edge of the first bin.
    pub lo: f64,
    /// Upper edge of the last bin.
    pub hi: f64,
    /// Counts per bin, length `n_bins`.
    pub counts: Vec<u64>,
    /// Number of values outside `[lo, hi)` or NaN.
    pub outside: u64,
}

impl Histogram {
    /// Counts `values` into `n_bins` equal bins on `[lo, hi)`.
    ///
    /// # Errors
    /// [`DatasetError::InvalidConfig`] when `n_bins` is 0 or `lo < hi` does not hold with both
    /// finite.
    pub fn new(values: &[f64], lo: f64, hi: f64, n_bins: usize) -> Result<Self> {
        if n_bins == 0 || !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(DatasetError::InvalidConfig(format!(
                "histogram needs n_bins >= 1 and finite lo < hi, got {n_bins} bins on [{lo}, {hi})"
            )));
        }
        let mut counts = vec![0u64; n_bins];
        let mut outside = 0;
        let width = (hi - lo) / n_bins as f64;
        for &v in values {
            if v >= lo && v < hi {
                let b = (((v - lo) / width) as usize).min(n_bins - 1);
                counts[b] += 1;
            } else {
                outside += 1;
            }
        }
        Ok(Self {
            lo,
            hi,
            counts,
            outside,
        })
    }

    /// Total number of values counted, inside and outside.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum::<u64>() + self.outside
    }

    /// Fraction of values per cell: the `n_bins` bins, then the outside cell (length
    /// `n_bins + 1`, sums to 1; all zeros when the histogram is empty).
    pub fn probabilities(&self) -> Vec<f64> {
        let t = self.total().max(1) as f64;
        self.counts
            .iter()
            .chain(std::iter::once(&self.outside))
            .map(|&c| c as f64 / t)
            .collect()
    }

    /// Total-variation distance `½ Σ_i |p_i − q_i|` between the normalised histograms (bins and
    /// outside cell), in `[0, 1]`.
    ///
    /// # Errors
    /// [`DatasetError::InvalidConfig`] when the binnings differ.
    pub fn total_variation(&self, other: &Histogram) -> Result<f64> {
        if self.lo != other.lo || self.hi != other.hi || self.counts.len() != other.counts.len() {
            return Err(DatasetError::InvalidConfig(
                "total variation of histograms with different binnings".into(),
            ));
        }
        Ok(0.5
            * self
                .probabilities()
                .iter()
                .zip(other.probabilities())
                .map(|(p, q)| (p - q).abs())
                .sum::<f64>())
    }
}

/// Expected total-variation distance between two histograms drawn independently from the same
/// cell probabilities `p` with `n1` and `n2` independent values: each cell difference is about
/// normal with variance `p_i (1 − p_i) (1/n1 + 1/n2)` and `E|N(0, s²)| = s √(2/π)`, so
/// `E[TV] ≈ ½ √(2/π) Σ_i √(p_i (1 − p_i) (1/n1 + 1/n2))`.
///
/// With correlated values (several pair distances per sample, correlated MCMC samples), pass
/// effective counts; counting samples rather than pair distances over-estimates the noise.
pub fn total_variation_noise(p: &[f64], n1: f64, n2: f64) -> f64 {
    let k = 1.0 / n1 + 1.0 / n2;
    0.5 * (2.0 / std::f64::consts::PI).sqrt()
        * p.iter()
            .map(|&pi| (pi * (1.0 - pi) * k).max(0.0).sqrt())
            .sum::<f64>()
}
