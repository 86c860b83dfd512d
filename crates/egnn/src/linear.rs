//! Fully connected layers with PyTorch's `nn.Linear` initialisation, so that models trained here start
//! from the same distribution of weights as the reference implementation.

use tch::nn::{self, Init, Module};
use tch::Tensor;

/// A fully connected layer `y = x W^T + b`, `W [out, in]`, `b [out]`, stored as `<path>.weight` and
/// `<path>.bias`. Input `[..., in]`, output `[..., out]`.
#[derive(Debug)]
pub struct Linear {
    /// Weight `[out, in]`.
    pub weight: Tensor,
    /// Bias `[out]`, if any.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// PyTorch's default initialisation: weight and bias uniform on +-1/sqrt(in) (what
    /// `kaiming_uniform_(a = sqrt(5))` gives for the weight).
    pub fn new(path: nn::Path, in_dim: i64, out_dim: i64) -> Self {
        Self::with_fan_in(path, in_dim, out_dim, in_dim, true)
    }

    /// One block of a wider layer that was split by input columns: initialised as the whole layer
    /// of fan-in `fan_in` would be (uniform on +-1/sqrt(fan_in)), with or without the bias.
    pub fn with_fan_in(path: nn::Path, in_dim: i64, out_dim: i64, fan_in: i64, bias: bool) -> Self {
        let bound = 1.0 / (fan_in as f64).sqrt();
        Linear {
            weight: uniform(&path, "weight", &[out_dim, in_dim], bound),
            bias: bias.then(|| uniform(&path, "bias", &[out_dim], bound)),
        }
    }

    /// Xavier-uniform weight with the given gain and no bias: uniform on
    /// +-gain * sqrt(6 / (in + out)) (Glorot & Bengio 2010). The EGNN's last coordinate layer uses
    /// gain 0.001 so that the initial flow is close to the identity.
    pub fn xavier_no_bias(path: nn::Path, in_dim: i64, out_dim: i64, gain: f64) -> Self {
        let bound = gain * (6.0 / (in_dim + out_dim) as f64).sqrt();
        Linear {
            weight: uniform(&path, "weight", &[out_dim, in_dim], bound),
            bias: None,
        }
    }
}

/// The first edge layer of a message network, `Linear(2 hidden + extra -> hidden)` on
/// `[h_i, h_j, ...]`, split by input columns into the blocks applied to `h_i` (`<path>.source`,
/// with the layer's bias) and to `h_j` (`<path>.target`, no bias), both initialised as the whole
/// layer of fan-in `fan_in` would be; so they can be applied per node and broadcast or gathered
/// over the neighbours. Returns `(source, target)`.
pub fn split_edge_input(path: &nn::Path, hidden_nf: i64, fan_in: i64) -> (Linear, Linear) {
    (
        Linear::with_fan_in(path / "source", hidden_nf, hidden_nf, fan_in, true),
        Linear::with_fan_in(path / "target", hidden_nf, hidden_nf, fan_in, false),
    )
}

/// A variable `<path>.<name>` of `shape` drawn uniformly on +-`bound`.
fn uniform(path: &nn::Path, name: &str, shape: &[i64], bound: f64) -> Tensor {
    path.var(
        name,
        shape,
        Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )
}

impl Linear {
    /// The tangent of the layer's output for an input tangent `dx [..., in]`: `dx W^T` (the bias
    /// does not move), `[..., out]`.
    pub fn tangent(&self, dx: &Tensor) -> Tensor {
        dx.linear(&self.weight, None::<&Tensor>)
    }

    /// `base + x W^T (+ b)` with the product and the sum fused (`addmm`): `x [rows, in]`, `base
    /// [rows, out]` -> `[rows, out]`. Lets a layer split by input columns add its other blocks
    /// without another operation.
    pub fn forward_onto(&self, base: &Tensor, x: &Tensor) -> Tensor {
        let y = base.addmm(x, &self.weight.tr());
        match &self.bias {
            Some(b) => y + b,
            None => y,
        }
    }

    /// The tangent of [`Linear::forward_onto`]'s output, `d_base + dx W^T`, `[rows, out]`.
    pub fn tangent_onto(&self, d_base: &Tensor, dx: &Tensor) -> Tensor {
        d_base.addmm(dx, &self.weight.tr())
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.weight, self.bias.as_ref())
    }
}
