//! ActNorm for positions and features (Kingma & Dhariwal 2018, "Glow", section 3.1; as the E-NF
//! QM9 model uses it, FACTS.md section 1 "ActNorm"): one learnable log-scale shared by all
//! position entries, a per-feature shift and log-scale for the features, initialised from the
//! first batch (masked statistics) so that the flow's input starts standardised.
//!
//! `x' = x / exp(s_x)`, `h' = (h - t_h) / exp(s_h)`; per graph with M real nodes in n dimensions
//! and nf features, `log |det| = -M (n s_x + sum_k s_h[k])`.

use tch::nn;
use tch::{Kind, Tensor};

use crate::error::{expect_mask, expect_positions, FlowError};

/// Added to the variance before the square root of the initial statistics (as the reference).
pub const ACTNORM_VAR_EPS: f64 = 1e-5;
/// Added to the standard deviation before its logarithm (as the reference).
pub const ACTNORM_LOG_EPS: f64 = 1e-8;

/// ActNorm over positions `[batch, nodes, n]` and features `[batch, nodes, nf]`.
///
/// Parameters under `path`: `x_log_s [1, 1]`, `h_t [1, nf]`, `h_log_s [1, nf]` (trainable) and
/// `initialized` (a scalar, not trained: 1 once [`ActNorm::initialize`] has run, saved with
/// the checkpoint so a restored model is not re-initialised).
#[derive(Debug)]
pub struct ActNorm {
    /// Log-scale of the positions, `[1, 1]`.
    pub x_log_s: Tensor,
    /// Shift of the features, `[1, nf]`.
    pub h_t: Tensor,
    /// Log-scale of the features, `[1, nf]`.
    pub h_log_s: Tensor,
    /// 1 once initialised, else 0 (scalar).
    pub initialized: Tensor,
    nf: i64,
}

impl ActNorm {
    /// An uninitialised ActNorm for `nf` features (all parameters zero: the identity).
    pub fn new(path: &nn::Path, nf: i64) -> Self {
        ActNorm {
            x_log_s: path.zeros("x_log_s", &[1, 1]),
            h_t: path.zeros("h_t", &[1, nf]),
            h_log_s: path.zeros("h_log_s", &[1, nf]),
            initialized: path.zeros_no_train("initialized", &[]),
            nf,
        }
    }

    /// Whether the parameters have been set from data (or restored).
    pub fn is_initialized(&self) -> bool {
        self.initialized.double_value(&[]) > 0.5
    }

    /// Sets the parameters from a batch, as the reference does on its first training batch:
    /// `t_h` = masked mean of each feature over all real nodes, `s_h = log(std + 1e-8)` with
    /// `std = sqrt(masked variance + 1e-5)`; `s_x = log(sqrt(sum of squared centred position
    /// entries / number of real nodes + 1e-5) + 1e-8)` (the reference divides the sum over all
    /// `n` entries of a node by the node count, i.e. it normalises by `sqrt(n)` times the
    /// per-entry standard deviation; kept for fidelity). No gradients are recorded.
    ///
    /// Errors: [`FlowError::Shape`] for shapes that do not fit.
    pub fn initialize(&self, x: &Tensor, h: &Tensor, node_mask: &Tensor) -> Result<(), FlowError> {
        self.check(x, h, node_mask)?;
        tch::no_grad(|| {
            let kind = x.kind();
            let mask = node_mask.to_kind(kind).unsqueeze(-1); // [B, M, 1]
            let count = mask.sum(kind).clamp_min(1.0);
            let h_mean = (h * &mask).sum_dim_intlist(&[0i64, 1][..], false, kind) / &count; // [nf]
            let h_var =
                ((h - &h_mean) * &mask)
                    .square()
                    .sum_dim_intlist(&[0i64, 1][..], false, kind)
                    / &count;
            let h_log_s = ((h_var + ACTNORM_VAR_EPS).sqrt() + ACTNORM_LOG_EPS).log();
            let x_mean = (x * &mask).sum(kind) / &count;
            let x_var = ((x - &x_mean) * &mask).square().sum(kind) / &count;
            let x_log_s = ((x_var + ACTNORM_VAR_EPS).sqrt() + ACTNORM_LOG_EPS).log();
            let mut h_t = self.h_t.shallow_clone();
            let mut hs = self.h_log_s.shallow_clone();
            let mut xs = self.x_log_s.shallow_clone();
            let mut init = self.initialized.shallow_clone();
            h_t.copy_(&h_mean.view([1, self.nf]).to_kind(h_t.kind()));
            hs.copy_(&h_log_s.view([1, self.nf]).to_kind(hs.kind()));
            xs.copy_(&x_log_s.view([1, 1]).to_kind(xs.kind()));
            let _ = init.fill_(1.0);
        });
        Ok(())
    }

    fn check(&self, x: &Tensor, h: &Tensor, node_mask: &Tensor) -> Result<(), FlowError> {
        expect_positions(x)?;
        expect_mask(x, node_mask)?;
        let (xs, hs) = (x.size(), h.size());
        if hs.len() != 3 || hs[..2] != xs[..2] || hs[2] != self.nf {
            return Err(FlowError::Shape {
                what: "ActNorm features",
                expected: format!("[{}, {}, {}]", xs[0], xs[1], self.nf),
                got: hs,
            });
        }
        Ok(())
    }

    fn check_initialized(&self) -> Result<(), FlowError> {
        if self.is_initialized() {
            Ok(())
        } else {
            Err(FlowError::Uninitialized(
                "ActNorm: call initialize on a batch (or restore a checkpoint) before use",
            ))
        }
    }

    /// Forward map: `(x / exp(s_x), (h - t_h) / exp(s_h))` at real nodes, 0 at padding, and
    /// `log |det| [batch]`. Positions stay centred.
    ///
    /// Errors: [`FlowError::Uninitialized`] before [`ActNorm::initialize`];
    /// [`FlowError::Shape`].
    pub fn forward(
        &self,
        x: &Tensor,
        h: &Tensor,
        node_mask: &Tensor,
    ) -> Result<(Tensor, Tensor, Tensor), FlowError> {
        self.check(x, h, node_mask)?;
        self.check_initialized()?;
        let kind = x.kind();
        let mask = node_mask.to_kind(kind).unsqueeze(-1);
        let (x_log_s, h_t, h_log_s) = self.params(kind);
        let x_out = x * (-&x_log_s).exp() * &mask;
        let h_out = (h - &h_t) * (-&h_log_s).exp() * &mask;
        let n_dims = x.size()[2] as f64;
        let per_node = x_log_s.sum(kind) * n_dims + h_log_s.sum(kind);
        let n_real = node_mask
            .to_kind(kind)
            .sum_dim_intlist(&[1i64][..], false, kind);
        Ok((x_out, h_out, -(n_real * per_node)))
    }

    /// Inverse map of [`ActNorm::forward`] (sampling).
    ///
    /// Errors: as [`ActNorm::forward`].
    pub fn reverse(
        &self,
        x: &Tensor,
        h: &Tensor,
        node_mask: &Tensor,
    ) -> Result<(Tensor, Tensor), FlowError> {
        self.check(x, h, node_mask)?;
        self.check_initialized()?;
        let kind = x.kind();
        let mask = node_mask.to_kind(kind).unsqueeze(-1);
        let (x_log_s, h_t, h_log_s) = self.params(kind);
        Ok((x * x_log_s.exp() * &mask, (h * h_log_s.exp() + h_t) * &mask))
    }

    fn params(&self, kind: Kind) -> (Tensor, Tensor, Tensor) {
        (
            self.x_log_s.to_kind(kind),
            self.h_t.to_kind(kind),
            self.h_log_s.to_kind(kind),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn initialised_actnorm_standardises_and_inverts_with_the_right_log_det() {
        tch::manual_seed(0);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let a = ActNorm::new(&vs.root(), 2);
        vs.set_kind(Kind::Double);
        let opts = (Kind::Double, Device::Cpu);
        let x = geometry::centre(&(Tensor::randn([3, 4, 3], opts) * 2.0), None).unwrap();
        let h = Tensor::randn([3, 4, 2], opts) * 3.0 + 1.0;
        let mask = Tensor::ones([3, 4], opts);
        assert!(a.forward(&x, &h, &mask).is_err());
        a.initialize(&x, &h, &mask).unwrap();
        let (x1, h1, ldj) = a.forward(&x, &h, &mask).unwrap();
        let h_mean = h1.mean_dim(&[0i64, 1][..], false, Kind::Double);
        assert!(h_mean.abs().max().double_value(&[]) < 1e-12);
        let (x2, h2) = a.reverse(&x1, &h1, &mask).unwrap();
        assert!((x2 - &x).abs().max().double_value(&[]) < 1e-12);
        assert!((h2 - &h).abs().max().double_value(&[]) < 1e-12);
        // log|det| of a diagonal map: sum of the log of its diagonal over the 4 x (3 + 2) entries.
        let s_x = a.x_log_s.double_value(&[0, 0]);
        let s_h = a.h_log_s.sum(Kind::Double).double_value(&[]);
        let expected = -4.0 * (3.0 * s_x + s_h);
        assert!((ldj.double_value(&[0]) - expected).abs() < 1e-12);
    }
}
