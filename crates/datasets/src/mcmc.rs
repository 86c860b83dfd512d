//! Seeded random-walk Metropolis sampling of `p(x) ∝ exp(−E(x))` with many independent chains.
//!
//! Each step proposes `x' = x + σ z` with `z ~ N(0, I)` on all `M * n` coordinates at once and
//! accepts it with probability `min(1, exp(−(E(x') − E(x))))` (Metropolis et al. 1953; the
//! sampler Köhler et al. 2020 used for DW4 and LJ13). The centre of mass is sampled too: the
//! energies are translation invariant, so it random-walks and the stored positions are not
//! centred (centre them before use, see [`crate::batch`]).
//!
//! # Determinism
//! Chain `k` draws from its own xoshiro256++ generator (`rand_xoshiro`) whose state comes from
//! ChaCha8 keyed by `seed` on stream `k` (see `rng.rs`). Normal draws use `rand_distr`'s ziggurat
//! `StandardNormal`, uniform draws `rand`'s `f64` conversion. The output is a pure function of
//! the energy, the configuration and the versions of `rand_chacha` / `rand_xoshiro` / `rand` /
//! `rand_distr` in `Cargo.lock`. Chains run one after another on the calling thread.

use rand::Rng;
use rand_distr::StandardNormal;

use crate::energy::Energy;
use crate::error::{DatasetError, Result};
use crate::rng::{stream_rng, Xoshiro256PlusPlus};

/// Settings of a multi-chain Metropolis run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetropolisConfig {
    /// Number of independent chains (≥ 1). Chains with no sample to contribute (when
    /// `n_samples < n_chains`) are not run.
    pub n_chains: usize,
    /// Total number of samples returned, over all chains (≥ 1).
    pub n_samples: usize,
    /// Metropolis steps per chain discarded before the first sample.
    pub burn_in: usize,
    /// Metropolis steps per chain between consecutive samples of that chain (≥ 1; 1 keeps every
    /// state).
    pub thin: usize,
    /// Standard deviation σ of the Gaussian proposal, per coordinate, in reduced length units
    /// (finite, > 0).
    pub proposal_std: f64,
    /// Standard deviation of the initial state: every coordinate starts as an independent
    /// `N(0, init_std²)` draw (finite, ≥ 0).
    pub init_std: f64,
    /// Seed of all random draws.
    pub seed: u64,
}

impl MetropolisConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`DatasetError::InvalidConfig`] when `n_chains`, `n_samples` or `thin` is 0,
    /// `proposal_std` is not finite and positive, or `init_std` is not finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(DatasetError::InvalidConfig(msg));
        if self.n_chains == 0 {
            return bad("n_chains must be at least 1".into());
        }
        if self.n_samples == 0 {
            return bad("n_samples must be at least 1".into());
        }
        if self.thin == 0 {
            return bad("thin must be at least 1".into());
        }
        if !(self.proposal_std.is_finite() && self.proposal_std > 0.0) {
            return bad(format!(
                "proposal_std must be finite and > 0, got {}",
                self.proposal_std
            ));
        }
        if !(self.init_std.is_finite() && self.init_std >= 0.0) {
            return bad(format!(
                "init_std must be finite and >= 0, got {}",
                self.init_std
            ));
        }
        Ok(())
    }

    /// Number of samples chain `k` contributes: `ceil((n_samples − k) / n_chains)` for
    /// `k < min(n_chains, n_samples)`, else 0.
    pub fn samples_of_chain(&self, k: usize) -> usize {
        if k >= self.n_samples || k >= self.n_chains {
            0
        } else {
            (self.n_samples - k).div_ceil(self.n_chains)
        }
    }

    /// Total number of Metropolis steps (energy evaluations) the run takes, over all chains.
    pub fn total_steps(&self) -> u128 {
        let active = self.n_chains.min(self.n_samples) as u128;
        active * self.burn_in as u128 + self.n_samples as u128 * self.thin as u128
    }
}

/// Output of [`metropolis`].
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Sampled configurations, float32, shape `[n_samples, n_particles, n_dims]`, row-major, not
    /// centred. Sample `s` is the `(s / n_chains)`-th sample of chain `s % n_chains` (chains
    /// interleaved, so any prefix spans many chains).
    pub positions: Vec<f32>,
    /// Energy of each sample, float64, shape `[n_samples]`, evaluated on the float64 state before
    /// rounding the positions to float32.
    pub energies: Vec<f64>,
    /// Fraction of accepted proposals after burn-in, over all chains.
    pub acceptance_rate: f64,
    /// Number of particles M.
    pub n_particles: usize,
    /// Spatial dimension n.
    pub n_dims: usize,
    /// The settings used.
    pub config: MetropolisConfig,
}

impl Samples {
    /// Number of samples N.
    pub fn len(&self) -> usize {
        self.energies.len()
    }

    /// `true` when there is no sample.
    pub fn is_empty(&self) -> bool {
        self.energies.is_empty()
    }

    /// The energies de-interleaved into one series per chain, in chain order; series `k` holds
    /// the samples `k, k + n_chains, k + 2 n_chains, …`. Chains that contributed no sample are
    /// omitted. Use it for per-chain autocorrelation analysis.
    pub fn energies_by_chain(&self) -> Vec<Vec<f64>> {
        let c = self.config.n_chains.max(1);
        (0..c.min(self.len()))
            .map(|k| self.energies.iter().skip(k).step_by(c).copied().collect())
            .collect()
    }
}

/// Runs `config.n_chains` independent Metropolis chains on `exp(−E)` and interleaves their
/// samples.
///
/// Cost: [`MetropolisConfig::total_steps`] energy evaluations, single-threaded.
///
/// # Errors
/// [`DatasetError::InvalidConfig`] when [`MetropolisConfig::validate`] fails or `energy` has zero
/// particles or dimensions.
pub fn metropolis<E: Energy + ?Sized>(energy: &E, config: &MetropolisConfig) -> Result<Samples> {
    config.validate()?;
    let (m, n) = (energy.n_particles(), energy.n_dims());
    let dim = m * n;
    if dim == 0 {
        return Err(DatasetError::InvalidConfig(format!(
            "energy has {m} particles in {n} dimensions"
        )));
    }
    let n_values = config.n_samples.checked_mul(dim).ok_or_else(|| {
        DatasetError::InvalidConfig(format!(
            "{} samples of {dim} coordinates overflow usize",
            config.n_samples
        ))
    })?;
    let mut positions = vec![0f32; n_values];
    let mut energies = vec![0f64; config.n_samples];
    let (mut accepted, mut proposed) = (0u64, 0u64);

    let mut x = vec![0f64; dim];
    let mut proposal = vec![0f64; dim];
    for chain in 0..config.n_chains.min(config.n_samples) {
        let mut rng = stream_rng(config.seed, chain as u64);
        for xi in x.iter_mut() {
            *xi = config.init_std * rng.sample::<f64, _>(StandardNormal);
        }
        let e = energy.energy(&x);
        let mut chain_state = ChainState {
            x: &mut x,
            proposal: &mut proposal,
            e,
        };
        for _ in 0..config.burn_in {
            chain_state.step(energy, config.proposal_std, &mut rng);
        }
        for j in 0..config.samples_of_chain(chain) {
            for _ in 0..config.thin {
                accepted += chain_state.step(energy, config.proposal_std, &mut rng) as u64;
            }
            proposed += config.thin as u64;
            let s = j * config.n_chains + chain;
            for (dst, src) in positions[s * dim..(s + 1) * dim]
                .iter_mut()
                .zip(chain_state.x.iter())
            {
                *dst = *src as f32;
            }
            energies[s] = chain_state.e;
        }
    }

    Ok(Samples {
        positions,
        energies,
        acceptance_rate: accepted as f64 / proposed.max(1) as f64,
        n_particles: m,
        n_dims: n,
        config: config.clone(),
    })
}

/// Current state of one chain and a scratch buffer for the proposal.
struct ChainState<'a> {
    x: &'a mut Vec<f64>,
    proposal: &'a mut Vec<f64>,
    e: f64,
}

impl ChainState<'_> {
    /// One Metropolis step; returns whether the proposal was accepted. A proposal whose energy is
    /// NaN is rejected.
    #[inline]
    fn step<E: Energy + ?Sized>(
        &mut self,
        energy: &E,
        std: f64,
        rng: &mut Xoshiro256PlusPlus,
    ) -> bool {
        for (p, xi) in self.proposal.iter_mut().zip(self.x.iter()) {
            *p = xi + std * rng.sample::<f64, _>(StandardNormal);
        }
        let e_new = energy.energy(self.proposal);
        let de = e_new - self.e;
        let accept = de <= 0.0 || (de.is_finite() && rng.random::<f64>() < (-de).exp());
        if accept {
            std::mem::swap(self.x, self.proposal);
            self.e = e_new;
        }
        accept
    }
}
