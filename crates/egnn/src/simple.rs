//! Simple dynamics, a baseline of the E-NF paper's Table 1 (Köhler, Klein & Noé 2020,
//! "Equivariant flows", section 4; FACTS.md section 3): the velocity is minus the gradient of a
//! learned pair potential, so it is E(n) and permutation equivariant by construction.
//!
//! For particles `x_i` (no features), with `r_ij = x_i - x_j` and `d_ij = sqrt(||r_ij||^2 + eps)`
//! (`eps = 1e-6`):
//!
//! ```text
//! U(x) = sum_{i != j} f(d_ij),   f(d) = MLP(phi(d)),
//! v_i  = -dU/dx_i = -2 sum_{j != i} f'(d_ij) r_ij / d_ij,
//! ```
//!
//! where `phi_k(d) = exp(-(d - mu_k)^2 / width^2) / sum_m exp(-(d - mu_m)^2 / width^2)` are
//! normalised RBF kernels (50 by default, centres evenly on [0, 8], width 0.5) and the MLP is
//! 50 -> 64 -> 32 -> 1 with tanh. The potential does not depend on time, as in the reference.
//!
//! The divergence has a closed form in `f'` and `f''`, which autograd gives per pair (f of one pair
//! depends on that pair's distance only): with `g = f'/d`,
//! `div v = -2 sum_{i != j} [n g(d_ij) + g'(d_ij) ||r_ij||^2 / d_ij]`
//! (`= -2 sum (f'' + (n - 1) f'/d)` for `eps = 0`). So the flow's trace is exact, at the cost of two
//! extra backward passes over the pair MLP, instead of a Hutchinson estimate.

use crate::dynamics::{check_positions, positions_only, Dynamics, Velocity};
use crate::error::EgnnError;
use crate::linear::Linear;
use crate::masks::{neighbour_differences, Masks};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Added under the square root of the squared distance (the reference's value). It bounds
/// `d >= 1e-3`: the velocity and divergence carry `f'(d) / d` and `f''(d) / d` terms, which with
/// a smaller bound overflowed in f32 when a solver stage brought two DW4 particles together
/// (NaN parameter gradients in training, measured: epoch 11 of the default profile with 1e-12).
const DISTANCE_EPS: f64 = 1e-6;

/// Hyper-parameters of [`SimpleDynamics`] (FACTS.md section 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimpleConfig {
    /// Number of RBF kernels in the distance.
    pub n_rbf: i64,
    /// Their centres are evenly spaced on [0, max_distance] (length units of the data).
    pub max_distance: f64,
    /// Kernel width (the reference's gamma): `exp(-(d - mu)^2 / width^2)`.
    pub width: f64,
    /// Hidden layer widths of the MLP from the kernels to the pair energy.
    pub hidden: Vec<i64>,
}

impl Default for SimpleConfig {
    /// The paper's: 50 kernels on [0, 8] of width 0.5, MLP 50 -> 64 -> 32 -> 1.
    fn default() -> Self {
        SimpleConfig {
            n_rbf: 50,
            max_distance: 8.0,
            width: 0.5,
            hidden: vec![64, 32],
        }
    }
}

/// Simple dynamics over particle systems.
///
/// Parameters under `path`: `potential.layers.<l>` (Linear layers of the pair MLP, the last with
/// one output) and the fixed `rbf_centres` `[n_rbf]`.
#[derive(Debug)]
pub struct SimpleDynamics {
    layers: Vec<Linear>,
    centres: Tensor,
    width: f64,
}

impl SimpleDynamics {
    /// Builds the dynamics under `path`.
    ///
    /// Errors: [`EgnnError::Config`] for fewer than 2 kernels, a non-positive `max_distance` or
    /// `width`, or a hidden width below 1.
    pub fn new(path: nn::Path, config: &SimpleConfig) -> Result<Self, EgnnError> {
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if config.n_rbf < 2
            || !positive(config.max_distance)
            || !positive(config.width)
            || config.hidden.iter().any(|&h| h < 1)
        {
            return Err(EgnnError::Config(format!(
                "simple dynamics need at least 2 kernels, a positive max_distance and width and \
                 hidden widths >= 1 (got {config:?})"
            )));
        }
        let widths: Vec<i64> = std::iter::once(config.n_rbf)
            .chain(config.hidden.iter().copied())
            .chain(std::iter::once(1))
            .collect();
        let potential = &path / "potential" / "layers";
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(l, w)| Linear::new(&potential / l, w[0], w[1]))
            .collect();
        let mut centres = path.zeros_no_train("rbf_centres", &[config.n_rbf]);
        let values = Tensor::linspace(
            0.0,
            config.max_distance,
            config.n_rbf,
            (Kind::Double, tch::Device::Cpu),
        );
        tch::no_grad(|| centres.copy_(&values.to_kind(path.kind())));
        Ok(SimpleDynamics {
            layers,
            centres,
            width: config.width,
        })
    }

    /// The pair energy `f(d)` for distances `d [..., 1]`: `[..., 1]`.
    fn pair_energy(&self, d: &Tensor) -> Tensor {
        // Offsets from the K centres, [..., K], then a softmax over the kernels' logits. The reference adds 1e-6 to every kernel before
        // normalising, which only matters more than 2 widths beyond the last centre (far kernels
        // then tend to uniform weights); the softmax is 3x cheaper here in the thrice
        // differentiated graph of a training step (LJ13: 3.0 against 8.7 s per step, measured).
        let offset = d - self.centres.to_kind(d.kind());
        let mut z = (offset.square() * (-1.0 / (self.width * self.width))).softmax(-1, d.kind());
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            z = layer.forward(&z);
            if l < last {
                z = z.tanh();
            }
        }
        z
    }

    /// Pair quantities of positions `x [batch, nodes, dims]`: differences, squared distances,
    /// distances and `f'(d)` (zero on padded pairs), and `f''(d)` if `second`.
    fn pair_terms(&self, x: &Tensor, masks: &Masks, second: bool) -> Result<PairTerms, EgnnError> {
        check_positions(x, masks, None)?;
        let kind = x.kind();
        let diff = neighbour_differences(x, &masks.neighbours); // [B, M, M-1, n]
        let sq = diff.square().sum_dim_intlist(&[-1i64][..], true, kind); // [B, M, M-1, 1]
        let d = (&sq + DISTANCE_EPS).sqrt();
        // f' and f'' by autograd in d, recorded even under the caller's no_grad (the velocity
        // itself is a derivative), with graphs so that the results stay differentiable.
        let (fp, fpp) = tch::with_grad(|| -> Result<_, EgnnError> {
            let d_in = if d.requires_grad() {
                d.shallow_clone()
            } else {
                d.detach().set_requires_grad(true)
            };
            let f = self.pair_energy(&d_in);
            let fp = Tensor::f_run_backward(&[f.sum(kind)], &[&d_in], true, true)?.remove(0);
            let fpp = if second {
                Some(Tensor::f_run_backward(&[fp.sum(kind)], &[&d_in], true, true)?.remove(0))
            } else {
                None
            };
            Ok((fp, fpp))
        })?;
        let mask = |t: Tensor| if masks.all_real { t } else { t * &masks.edge };
        Ok(PairTerms {
            diff,
            sq,
            d,
            fp: mask(fp),
            fpp: fpp.map(mask),
        })
    }

    /// The centred velocity `-2 sum_j f'(d_ij) r_ij / d_ij`, `[batch, nodes, dims]`.
    fn velocity_from(terms: &PairTerms, masks: &Masks) -> Result<Tensor, EgnnError> {
        let kind = terms.diff.kind();
        let v =
            (&terms.diff * (&terms.fp / &terms.d)).sum_dim_intlist(&[2i64][..], false, kind) * -2.0;
        let node_mask = (!masks.all_real).then_some(&masks.node);
        Ok(geometry::centre(&v, node_mask)?)
    }
}

/// Per-pair tensors in the neighbour layout `[batch, nodes, nodes - 1, ...]`.
struct PairTerms {
    /// `r_ij`, `[..., dims]`.
    diff: Tensor,
    /// `||r_ij||^2`, `[..., 1]`.
    sq: Tensor,
    /// `d_ij`, `[..., 1]`.
    d: Tensor,
    /// `f'(d_ij)`, `[..., 1]`, zero on padded pairs.
    fp: Tensor,
    /// `f''(d_ij)`, `[..., 1]`, zero on padded pairs, when asked for.
    fpp: Option<Tensor>,
}

impl Dynamics for SimpleDynamics {
    /// Errors: [`EgnnError::Shape`] for positions that are not `[batch, nodes, dims]` fitting the
    /// masks or for node features (simple dynamics move positions only); [`EgnnError::Torch`] if
    /// libtorch cannot differentiate the pair energy.
    fn velocity(
        &self,
        _t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<Velocity, EgnnError> {
        positions_only(h, "none (simple dynamics move positions only)")?;
        let terms = self.pair_terms(x, masks, false)?;
        Ok(Velocity {
            x: Self::velocity_from(&terms, masks)?,
            h: None,
        })
    }

    fn velocity_and_divergence(
        &self,
        _t: f64,
        x: &Tensor,
        masks: &Masks,
    ) -> Option<Result<(Tensor, Tensor), EgnnError>> {
        let evaluate = || -> Result<(Tensor, Tensor), EgnnError> {
            let terms = self.pair_terms(x, masks, true)?;
            let v = Self::velocity_from(&terms, masks)?;
            let PairTerms {
                sq,
                d,
                fp,
                fpp,
                diff,
            } = terms;
            let fpp = fpp.unwrap_or_else(|| fp.zeros_like());
            // g = f'/d and g' = f''/d - f'/d^2: div v = -2 sum [n g + g' ||r||^2 / d].
            let g = fp / &d;
            let g_prime = (fpp - &g) / &d;
            let n_dims = diff.size()[3] as f64;
            let pair = &g * n_dims + g_prime * sq / &d;
            let div = pair.sum_dim_intlist(&[1i64, 2, 3][..], false, d.kind()) * -2.0;
            Ok((v, div))
        };
        Some(evaluate())
    }
}
