//! Kernel dynamics, a baseline of the E-NF paper's Table 1 (Köhler, Klein & Noé 2020,
//! "Equivariant flows: exact likelihood generative learning for symmetric densities", section 4):
//! an E(n) equivariant velocity whose divergence has a closed form.
//!
//! For particles `x_i` (no features), with `d_ij = sqrt(||x_i - x_j||^2 + eps)`:
//!
//! ```text
//! v_i = sum_{j != i} (x_i - x_j) w(d_ij, t),
//! w(d, t) = sum_k sum_l W_kl phi_k(d) psi_l(t),
//! ```
//!
//! where `phi_k(d) = exp(-g_k (d - mu_k)^2) / sum_m exp(-g_m (d - mu_m)^2)` are normalised RBF
//! kernels in the distance (50 by default, centres evenly on [0, max_distance]) and `psi_l` the
//! same in time (10 on [0, 1]); only the weights `W` (and optionally the distance widths `g_k`)
//! are learned. `w` is symmetric in (i, j), so `sum_i v_i = 0`: the velocity stays centred.
//!
//! The divergence: `d/dx_i . [(x_i - x_j) w(d_ij)] = n w(d_ij) + w'(d_ij) ||x_i - x_j||^2 / d_ij`,
//! summed over ordered pairs, with `w'(d) = sum_k c_k phi_k(d) (a_k - sum_m phi_m a_m)`,
//! `a_k = -2 g_k (d - mu_k)`, `c_k = sum_l W_kl psi_l(t)`.

use crate::dynamics::{check_positions, positions_only, Dynamics, Velocity};
use crate::error::EgnnError;
use crate::masks::{neighbour_differences, Masks};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// Added under the square root of the squared distance, so that coincident particles are finite.
const DISTANCE_EPS: f64 = 1e-12;

/// Hyper-parameters of [`KernelDynamics`] (FACTS.md section 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    /// Number of RBF kernels in the distance.
    pub n_distance_kernels: i64,
    /// Their centres are evenly spaced on [0, max_distance] (length units of the data).
    pub max_distance: f64,
    /// Number of RBF kernels in time, centres evenly spaced on [0, 1].
    pub n_time_kernels: i64,
    /// Learn the distance kernels' widths (log g_k) too.
    pub learn_widths: bool,
}

impl Default for KernelConfig {
    /// 50 distance kernels on [0, 8] (DW4's pair distances), 10 time kernels, fixed widths.
    fn default() -> Self {
        KernelConfig {
            n_distance_kernels: 50,
            max_distance: 8.0,
            n_time_kernels: 10,
            learn_widths: false,
        }
    }
}

/// Evenly spaced centres on `[0, max]` and the width `g = 1 / (2 s^2)` with `s` their spacing.
fn centres_and_gamma(n: i64, max: f64) -> (Tensor, f64) {
    let spacing = max / (n - 1) as f64;
    (
        Tensor::linspace(0.0, max, n, (Kind::Double, tch::Device::Cpu)),
        1.0 / (2.0 * spacing * spacing),
    )
}

/// Kernel dynamics over particle systems.
///
/// Parameters under `path`: `weights` `[n_distance_kernels, n_time_kernels]` (trainable, zero at
/// construction: the flow starts as the identity), `log_distance_gammas` `[n_distance_kernels]`
/// (trainable only with `learn_widths`), and the fixed `distance_centres`, `time_centres`.
#[derive(Debug)]
pub struct KernelDynamics {
    weights: Tensor,
    distance_centres: Tensor,
    log_distance_gammas: Tensor,
    time_centres: Tensor,
    time_gamma: f64,
}

impl KernelDynamics {
    /// Builds the dynamics under `path`.
    ///
    /// Errors: [`EgnnError::Config`] for fewer than 2 kernels of either kind or a non-positive
    /// `max_distance`.
    pub fn new(path: nn::Path, config: &KernelConfig) -> Result<Self, EgnnError> {
        let (k, l) = (config.n_distance_kernels, config.n_time_kernels);
        if k < 2 || l < 2 || !(config.max_distance > 0.0 && config.max_distance.is_finite()) {
            return Err(EgnnError::Config(format!(
                "kernel dynamics need at least 2 distance and 2 time kernels and a positive \
                 max_distance (got {k}, {l}, {})",
                config.max_distance
            )));
        }
        let kind = path.kind();
        let fixed = |name: &str, value: &Tensor| {
            let mut v = path.zeros_no_train(name, &value.size());
            tch::no_grad(|| v.copy_(&value.to_kind(kind)));
            v
        };
        let (mu, gamma) = centres_and_gamma(k, config.max_distance);
        let (tau, time_gamma) = centres_and_gamma(l, 1.0);
        let log_gammas = Tensor::full([k], gamma.ln(), (Kind::Double, tch::Device::Cpu));
        let log_distance_gammas = if config.learn_widths {
            path.var_copy("log_distance_gammas", &log_gammas.to_kind(kind))
        } else {
            fixed("log_distance_gammas", &log_gammas)
        };
        Ok(KernelDynamics {
            weights: path.zeros("weights", &[k, l]),
            distance_centres: fixed("distance_centres", &mu),
            log_distance_gammas,
            time_centres: fixed("time_centres", &tau),
            time_gamma,
        })
    }

    /// The velocity `[batch, nodes, dims]` and its divergence `[batch]` in one pass.
    // `a = a * b` on purpose: `*=` on a tensor is libtorch's in-place op inside an autograd graph.
    #[allow(clippy::assign_op_pattern)]
    fn evaluate(&self, t: f64, x: &Tensor, masks: &Masks) -> Result<(Tensor, Tensor), EgnnError> {
        let size = check_positions(x, masks, None)?;
        let n_dims = size[2] as f64;
        let diff = neighbour_differences(x, &masks.neighbours); // [B, M, M-1, n]
        let sq = diff.square().sum_dim_intlist(&[-1i64][..], true, x.kind()); // [B, M, M-1, 1]
        let d = (&sq + DISTANCE_EPS).sqrt();
        let gammas = self.log_distance_gammas.to_kind(x.kind()).exp(); // [K]
        let offset = &d - self.distance_centres.to_kind(x.kind()); // [B, M, M-1, K]
        let phi = (-(&gammas * offset.square())).softmax(-1, x.kind());
        let time_logits = (self.time_centres.to_kind(x.kind()) - t).square() * -self.time_gamma;
        let psi = time_logits.softmax(-1, x.kind()); // [L]
        let c = self.weights.to_kind(x.kind()).matmul(&psi); // [K]
        let phi_c = &phi * &c;
        let mut w = phi_c.sum_dim_intlist(&[-1i64][..], true, x.kind()); // [B, M, M-1, 1]

        // dw/dd: the derivative of the normalised kernels.
        let a = offset * (&gammas * -2.0);
        let a_mean = (&phi * &a).sum_dim_intlist(&[-1i64][..], true, x.kind());
        let mut w_prime = (phi_c * (a - a_mean)).sum_dim_intlist(&[-1i64][..], true, x.kind());
        if !masks.all_real {
            w = w * &masks.edge;
            w_prime = w_prime * &masks.edge;
        }
        let v = (diff * &w).sum_dim_intlist(&[2i64][..], false, x.kind());
        let pair_div = w * n_dims + w_prime * sq / d;
        let div = pair_div.sum_dim_intlist(&[1i64, 2, 3][..], false, x.kind());
        Ok((v, div))
    }
}

impl Dynamics for KernelDynamics {
    /// Errors: [`EgnnError::Shape`] for positions that are not `[batch, nodes, dims]` fitting the
    /// masks or for node features (kernel dynamics move positions only).
    fn velocity(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<Velocity, EgnnError> {
        positions_only(h, "none (kernel dynamics move positions only)")?;
        Ok(Velocity {
            x: self.evaluate(t, x, masks)?.0,
            h: None,
        })
    }

    fn velocity_and_divergence(
        &self,
        t: f64,
        x: &Tensor,
        masks: &Masks,
    ) -> Option<Result<(Tensor, Tensor), EgnnError>> {
        Some(self.evaluate(t, x, masks))
    }
}
