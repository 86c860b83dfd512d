//! Dequantization of discrete node features (E-NF paper, section 4 and appendix; FACTS.md section 1
//! "Dequantization"): a continuous flow needs continuous inputs, so the one-hot atom type and the
//! integer charge of each atom are lifted to continuous `v` with a density `q(v | x, h)`, and
//! `log p(x, h) >= E_q[log p(x, v) - log q(v | x, h)]` (variational dequantization, Ho et al. 2019;
//! argmax flows, Hoogeboom et al. 2021).
//!
//! Three schemes ([`DequantizerKind`]):
//! - uniform: `v = h + u`, `u ~ U[-1/2, 1/2)` per entry, `log q = 0`; reverse: round;
//! - variational: `(mu, log sigma)` from an EGNN over `(x, h)`, `u = mu + sigma eps`,
//!   `v = h + sigmoid(u)`, `log q = log N(eps) - sum log sigma - sum log sigmoid'(u)`; reverse:
//!   floor;
//! - argmax + variational (the paper's): the integer part as above; for the one-hot part, with
//!   `T = u` at the true class, `v_k = u_k` for the true class and `v_k = T - softplus(T - u_k)`
//!   otherwise (so the true class stays the largest), `log q` gains `-sum_{k != true}
//!   log sigmoid(T - u_k)`; reverse: argmax for the type, floor for the integer.
//!
//! Shapes: positions `x [batch, nodes, n]` (centred), categories `[batch, nodes, K]` (one-hot),
//! integers `[batch, nodes, I]` (QM9: K = 5 atom types, I = 1 atomic number), node mask
//! `[batch, nodes]`; padded entries of everything returned are exactly 0.

use serde::{Deserialize, Serialize};
use tch::nn;
use tch::{Kind, Tensor};

use crate::error::{expect_mask, expect_positions, FlowError};
use egnn::{Egnn, EgnnConfig, Masks};

const LOG_2PI: f64 = 1.837_877_066_409_345_5;

/// Which dequantization scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DequantizerKind {
    /// Uniform noise, no parameters.
    Uniform,
    /// Variational: noise from an EGNN, through a sigmoid, added to every entry.
    Variational,
    /// Argmax for the one-hot part, variational for the integers (the paper's QM9 setting).
    ArgmaxVariational,
}

/// The EGNN of the variational dequantizers as in the reference: 4 layers of 64, no attention, no
/// tanh on the coordinate update, sum aggregation, no edge attributes, no time.
pub fn dequantizer_egnn_config() -> EgnnConfig {
    EgnnConfig {
        hidden_nf: 64,
        n_layers: 4,
        attention: false,
        tanh: false,
        condition_time: false,
        ..EgnnConfig::default()
    }
}

/// The result of dequantizing a batch.
#[derive(Debug)]
pub struct Dequantized {
    /// Continuous features `[batch, nodes, K + I]` (categories first), 0 at padding.
    pub v: Tensor,
    /// `log q(v | x, h)` in nats, `[batch]`.
    pub log_q: Tensor,
}

/// A dequantizer for `n_categories` one-hot and `n_integers` integer features per node.
///
/// Parameters (variational kinds) under `path`: `egnn.*` ([`Egnn`]: in `K + I`, out
/// `2 (K + I)` = mu then log sigma).
#[derive(Debug)]
pub struct Dequantizer {
    kind: DequantizerKind,
    net: Option<Egnn>,
    n_categories: i64,
    n_integers: i64,
}

impl Dequantizer {
    /// Builds the dequantizer; `config` is the EGNN's (see [`dequantizer_egnn_config`]), unused
    /// for [`DequantizerKind::Uniform`].
    ///
    /// Errors: [`FlowError::Dynamics`] for an invalid EGNN configuration.
    pub fn new(
        path: &nn::Path,
        kind: DequantizerKind,
        n_categories: i64,
        n_integers: i64,
        config: &EgnnConfig,
    ) -> Result<Self, FlowError> {
        let nf = n_categories + n_integers;
        let net = match kind {
            DequantizerKind::Uniform => None,
            _ => Some(Egnn::new(path / "egnn", config, nf, 2 * nf, 0)?),
        };
        Ok(Dequantizer {
            kind,
            net,
            n_categories,
            n_integers,
        })
    }

    /// The scheme.
    pub fn kind(&self) -> DequantizerKind {
        self.kind
    }

    fn check(
        &self,
        x: &Tensor,
        categories: &Tensor,
        integers: &Tensor,
        masks: &Masks,
    ) -> Result<(), FlowError> {
        expect_positions(x)?;
        expect_mask(x, &masks.node)?;
        let xs = x.size();
        for (what, t, n) in [
            ("one-hot categories", categories, self.n_categories),
            ("integer features", integers, self.n_integers),
        ] {
            let s = t.size();
            if s.len() != 3 || s[..2] != xs[..2] || s[2] != n {
                return Err(FlowError::Shape {
                    what,
                    expected: format!("[{}, {}, {n}]", xs[0], xs[1]),
                    got: s,
                });
            }
        }
        Ok(())
    }

    /// Dequantizes: draws `v ~ q(v | x, h)` (noise from the libtorch generator) and returns it
    /// with `log q(v | x, h)`.
    ///
    /// Errors: [`FlowError::Shape`] for shapes that do not fit; EGNN errors.
    pub fn forward(
        &self,
        x: &Tensor,
        categories: &Tensor,
        integers: &Tensor,
        masks: &Masks,
    ) -> Result<Dequantized, FlowError> {
        expect_mask(x, &masks.node)?;
        let noise = self.draw_noise(&masks.node, x.kind())?;
        self.forward_with_noise(x, categories, integers, masks, &noise)
    }

    /// Draws the noise [`Dequantizer::forward_with_noise`] takes for graphs of `node_mask
    /// [batch, nodes]`: `[batch, nodes, K + I]` in `kind`, uniform on `[0, 1)` for
    /// [`DequantizerKind::Uniform`], standard normal otherwise, 0 at padding (libtorch's
    /// generator).
    ///
    /// Errors: [`FlowError::Shape`] when `node_mask` is not rank 2.
    pub fn draw_noise(&self, node_mask: &Tensor, kind: Kind) -> Result<Tensor, FlowError> {
        let s = node_mask.size();
        if s.len() != 2 {
            return Err(FlowError::Shape {
                what: "node mask",
                expected: "[batch, nodes]".into(),
                got: s,
            });
        }
        let shape = [s[0], s[1], self.n_categories + self.n_integers];
        let opts = (kind, node_mask.device());
        let noise = match self.kind {
            DequantizerKind::Uniform => Tensor::rand(shape, opts),
            _ => Tensor::randn(shape, opts),
        };
        Ok(noise * node_mask.to_kind(kind).unsqueeze(-1))
    }

    /// [`Dequantizer::forward`] with given noise `[batch, nodes, K + I]` ([`Dequantizer::draw_noise`]):
    /// uniform `[0, 1)` draws for the uniform scheme (`v = h + noise - 1/2`), standard normal
    /// `eps` for the variational ones. Deterministic: tests compare molecules alone and padded
    /// in a batch with the same noise.
    ///
    /// Errors: [`FlowError::Shape`] for shapes that do not fit; EGNN errors.
    pub fn forward_with_noise(
        &self,
        x: &Tensor,
        categories: &Tensor,
        integers: &Tensor,
        masks: &Masks,
        noise: &Tensor,
    ) -> Result<Dequantized, FlowError> {
        self.check(x, categories, integers, masks)?;
        let kind = x.kind();
        let mask = masks.node.to_kind(kind).unsqueeze(-1); // [B, M, 1]
        let h = Tensor::cat(&[categories, integers], -1).to_kind(kind) * &mask;
        if noise.size() != h.size() {
            return Err(FlowError::Shape {
                what: "dequantization noise",
                expected: format!("{:?}", h.size()),
                got: noise.size(),
            });
        }
        let Some(net) = &self.net else {
            let v = (&h + noise - 0.5) * &mask;
            let log_q = Tensor::zeros([x.size()[0]], (kind, x.device()));
            return Ok(Dequantized { v, log_q });
        };
        let nf = self.n_categories + self.n_integers;
        let (out, _) = net.forward(&h, &(x * &mask), None, masks)?;
        let mu = out.narrow(-1, 0, nf);
        let log_sigma = out.narrow(-1, nf, nf);
        let eps = noise.to_kind(kind) * &mask;
        let u = &mu + &eps * log_sigma.exp();
        // log q(u) = log N(eps) - sum log sigma, over real entries.
        let n_real = mask.sum_dim_intlist(&[1i64, 2][..], false, kind) * nf as f64;
        let log_n_eps = eps.square().sum_dim_intlist(&[1i64, 2][..], false, kind) * -0.5
            - n_real * (0.5 * LOG_2PI);
        let mut log_q =
            log_n_eps - (&log_sigma * &mask).sum_dim_intlist(&[1i64, 2][..], false, kind);
        let (u_cat, u_int) = (
            u.narrow(-1, 0, self.n_categories),
            u.narrow(-1, self.n_categories, self.n_integers),
        );
        let (h_cat, h_int) = (
            h.narrow(-1, 0, self.n_categories),
            h.narrow(-1, self.n_categories, self.n_integers),
        );
        let (v_int, ldj_int) = sigmoid_shift(&h_int, &u_int, &mask);
        let (v_cat, ldj_cat) = match self.kind {
            DequantizerKind::ArgmaxVariational => argmax_partition(&h_cat, &u_cat, &mask),
            _ => sigmoid_shift(&h_cat, &u_cat, &mask),
        };
        log_q = log_q - ldj_int - ldj_cat;
        let v = Tensor::cat(&[v_cat, v_int], -1) * &mask;
        Ok(Dequantized { v, log_q })
    }

    /// Quantizes continuous features `v [batch, nodes, K + I]` back: one-hot categories `[batch,
    /// nodes, K]` (round for uniform, floor for variational, argmax for argmax) and integers
    /// `[batch, nodes, I]` (round for uniform, floor otherwise), both in `v`'s kind, 0 at padding.
    ///
    /// Errors: [`FlowError::Shape`] when `v` is not `[batch, nodes, K + I]` fitting the mask.
    pub fn reverse(&self, v: &Tensor, node_mask: &Tensor) -> Result<(Tensor, Tensor), FlowError> {
        let s = v.size();
        let nf = self.n_categories + self.n_integers;
        if s.len() != 3 || s[2] != nf {
            return Err(FlowError::Shape {
                what: "dequantized features",
                expected: format!("[batch, nodes, {nf}]"),
                got: s,
            });
        }
        expect_mask(v, node_mask)?;
        let mask = node_mask.to_kind(v.kind()).unsqueeze(-1);
        let v_cat = v.narrow(-1, 0, self.n_categories);
        let v_int = v.narrow(-1, self.n_categories, self.n_integers);
        let (cat, int) = match self.kind {
            DequantizerKind::Uniform => (v_cat.round(), v_int.round()),
            DequantizerKind::Variational => (v_cat.floor(), v_int.floor()),
            DequantizerKind::ArgmaxVariational => (
                v_cat
                    .argmax(-1, false)
                    .one_hot(self.n_categories)
                    .to_kind(v.kind()),
                v_int.floor(),
            ),
        };
        Ok((cat * &mask, int * mask))
    }
}

/// `v = h + sigmoid(u)` and `log |det dv/du| = sum over real entries of log sigmoid'(u)
/// = log sigmoid(u) + log sigmoid(-u)`, `[batch]`.
fn sigmoid_shift(h: &Tensor, u: &Tensor, mask: &Tensor) -> (Tensor, Tensor) {
    let kind = u.kind();
    let ldj = ((u.log_sigmoid() + (-u).log_sigmoid()) * mask).sum_dim_intlist(
        &[1i64, 2][..],
        false,
        kind,
    );
    (h + u.sigmoid(), ldj)
}

/// The argmax partition map: with `T = sum_k onehot_k u_k`, `v = onehot * u + (1 - onehot)
/// (T - softplus(T - u))` at real nodes, and `log |det dv/du| = sum_{k != true} log sigmoid(T -
/// u_k)` over real nodes, `[batch]`.
fn argmax_partition(onehot: &Tensor, u: &Tensor, mask: &Tensor) -> (Tensor, Tensor) {
    let kind = u.kind();
    let t = (onehot * u).sum_dim_intlist(&[-1i64][..], true, kind);
    let others = (1.0 - onehot) * mask;
    let diff = &t - u;
    let v = onehot * u + &others * (&t - diff.softplus());
    let ldj = (diff.log_sigmoid() * &others).sum_dim_intlist(&[1i64, 2][..], false, kind);
    (v, ldj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn argmax_partition_keeps_the_true_class_largest() {
        tch::manual_seed(3);
        let opts = (Kind::Double, Device::Cpu);
        let onehot = Tensor::from_slice(&[3i64, 0, 4, 1, 2, 2])
            .one_hot(5)
            .to_kind(Kind::Double)
            .view([1, 6, 5]);
        let mask = Tensor::ones([1, 6, 1], opts);
        for _ in 0..20 {
            let u = Tensor::randn([1, 6, 5], opts) * 4.0;
            let (v, _) = argmax_partition(&onehot, &u, &mask);
            assert!(v.argmax(-1, false).equal(&onehot.argmax(-1, false)));
        }
    }
}
