//! Energies of the particle systems of the E-NF paper's Table 1.
//!
//! Configurations are flat `f64` slices in particle-major order: `x[i * n_dims + k]` is coordinate
//! `k` of particle `i`, length `n_particles * n_dims` (e.g. DW4: `[x0, y0, x1, y1, x2, y2, x3, y3]`).
//! All quantities are in reduced units; the Boltzmann density is `p(x) ∝ exp(-E(x))` at
//! temperature 1.
//!
//! Sources: Köhler, Klein and Noé, "Equivariant Flows: exact likelihood generative learning for
//! symmetric densities", ICML 2020, section 6 (DW4 and LJ13 definitions); Satorras et al., "E(n)
//! Equivariant Normalizing Flows", NeurIPS 2021, section 5.1. The LJ13 sum over ordered pairs is
//! what the public reference samples show (see `FACTS.md` section 2).

/// An energy function of `n_particles` particles in `n_dims` dimensions.
pub trait Energy {
    /// Number of particles M.
    fn n_particles(&self) -> usize;

    /// Spatial dimension n.
    fn n_dims(&self) -> usize;

    /// Energy E(x) in reduced units (units of kT).
    ///
    /// `x` is one configuration, flattened particle-major, length `M * n`. Returns `f64::NAN` when
    /// `x` has another length, so that a Metropolis step on it is always rejected; never panics.
    fn energy(&self, x: &[f64]) -> f64;
}

/// Euclidean distance between two particles' coordinate slices (same length).
#[inline]
fn distance(xi: &[f64], xj: &[f64]) -> f64 {
    xi.iter()
        .zip(xj)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt()
}

/// Double-well pair potential on all unordered pairs (DW4 of Köhler et al. 2020, eq. 20):
///
/// `E(x) = Σ_{i<j} a (d_ij − d0)^4 + b (d_ij − d0)^2 + c`, with `d_ij = ||x_i − x_j||`.
///
/// With `a = 0.9, b = −4, c = 0, d0 = 4` each pair has two wells, at `d = d0 ± sqrt(−b / 2a)`
/// (≈ 2.51 and ≈ 5.49) of depth `−b² / 4a` ≈ −4.44 below the barrier at `d = d0`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DoubleWell {
    /// Number of particles M.
    pub n_particles: usize,
    /// Spatial dimension n.
    pub n_dims: usize,
    /// Quartic coefficient a.
    pub a: f64,
    /// Quadratic coefficient b.
    pub b: f64,
    /// Constant per pair c.
    pub c: f64,
    /// Centre distance d0.
    pub d0: f64,
}

impl DoubleWell {
    /// The DW4 system: 4 particles in 2D, `a = 0.9, b = −4, c = 0, d0 = 4`.
    pub fn dw4() -> Self {
        Self {
            n_particles: 4,
            n_dims: 2,
            a: 0.9,
            b: -4.0,
            c: 0.0,
            d0: 4.0,
        }
    }

    /// Energy of one pair at distance `d`: `a (d − d0)^4 + b (d − d0)^2 + c`.
    #[inline]
    pub fn pair_energy(&self, d: f64) -> f64 {
        let s = (d - self.d0) * (d - self.d0);
        self.a * s * s + self.b * s + self.c
    }
}

impl Energy for DoubleWell {
    fn n_particles(&self) -> usize {
        self.n_particles
    }

    fn n_dims(&self) -> usize {
        self.n_dims
    }

    fn energy(&self, x: &[f64]) -> f64 {
        if x.len() != self.n_particles * self.n_dims || self.n_dims == 0 {
            return f64::NAN;
        }
        let n = self.n_dims;
        let mut e = 0.0;
        for i in 0..self.n_particles {
            for j in i + 1..self.n_particles {
                e += self.pair_energy(distance(&x[i * n..(i + 1) * n], &x[j * n..(j + 1) * n]));
            }
        }
        e
    }
}

/// Lennard-Jones cluster in a harmonic trap (LJ13 of Köhler et al. 2020, eq. 21):
///
/// `E(x) = Σ_{i≠j} ε [ (r_m / d_ij)^12 − 2 (r_m / d_ij)^6 ] + (k / 2) Σ_i ||x_i − x̄||^2`,
///
/// summed over ORDERED pairs (each unordered pair counted twice), with `x̄` the mean particle
/// position, `ε = r_m = 1`, `k = 1`. Coincident particles give `+∞`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LennardJones {
    /// Number of particles M.
    pub n_particles: usize,
    /// Spatial dimension n.
    pub n_dims: usize,
    /// Well depth ε.
    pub eps: f64,
    /// Distance of the pair minimum r_m.
    pub rm: f64,
    /// Stiffness k of the harmonic term pulling particles to their mean (the `0.5` in the
    /// formula is `k / 2` with `k = 1`).
    pub harmonic: f64,
}

impl LennardJones {
    /// The LJ13 system: 13 particles in 3D, `ε = r_m = 1`, harmonic stiffness 1.
    pub fn lj13() -> Self {
        Self {
            n_particles: 13,
            n_dims: 3,
            eps: 1.0,
            rm: 1.0,
            harmonic: 1.0,
        }
    }
}

impl Energy for LennardJones {
    fn n_particles(&self) -> usize {
        self.n_particles
    }

    fn n_dims(&self) -> usize {
        self.n_dims
    }

    fn energy(&self, x: &[f64]) -> f64 {
        let (m, n) = (self.n_particles, self.n_dims);
        if x.len() != m * n || m == 0 || n == 0 {
            return f64::NAN;
        }
        let mut lj = 0.0;
        for i in 0..m {
            for j in i + 1..m {
                let d = distance(&x[i * n..(i + 1) * n], &x[j * n..(j + 1) * n]);
                let s6 = (self.rm / d).powi(6);
                // s6 (s6 - 2) rather than s6^2 - 2 s6: +inf, not NaN, at contact.
                lj += s6 * (s6 - 2.0);
            }
        }
        // Ordered pairs: every unordered pair twice.
        let lj = 2.0 * self.eps * lj;

        let mut harmonic = 0.0;
        for k in 0..n {
            let mean = (0..m).map(|i| x[i * n + k]).sum::<f64>() / m as f64;
            harmonic += (0..m).map(|i| (x[i * n + k] - mean).powi(2)).sum::<f64>();
        }
        lj + 0.5 * self.harmonic * harmonic
    }
}
