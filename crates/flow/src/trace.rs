//! The divergence `tr(dv/dx)` of the dynamics, the integrand of the log-density change.
//!
//! - Exact: one vector-Jacobian product per state dimension D = nodes * dims. They are computed as
//!   one batched product: the batch is replicated D times, copy k is differentiated against the k-th
//!   unit vector, and the k-th entry of its gradient is the k-th diagonal entry of the Jacobian.
//! - Hutchinson (Hutchinson 1989; FFJORD, Grathwohl et al. 2019, eq. 7): `eps^T (dv/dx) eps` with
//!   `E[eps eps^T] = I`, eps drawn once per ODE solve (re-drawing it at every evaluation makes the
//!   adaptive solver's step count explode: the integrand is then not smooth in t).
//!
//! Both are computed here from vector-Jacobian products (reverse mode). Dynamics with a
//! forward-mode derivative (`egnn::Dynamics::velocity_jvp`) let the flow take the same values
//! from Jacobian-vector products instead (`J eps`, `J e_k`; see `Cnf::forward_mode_trace`).
//!
//! Positions live on the zero-centre-of-mass subspace and the velocity is translation invariant and
//! centred, so the trace over all nodes * dims entries equals the trace on the subspace.

use crate::error::FlowError;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// The distribution of Hutchinson's probe vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Noise {
    /// +-1 with equal probability (lowest variance; the reference's choice for DW4 and LJ13).
    Rademacher,
    /// Standard normal (the reference's choice for QM9).
    Gaussian,
}

/// How the trace of the dynamics' Jacobian is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "noise")]
pub enum TraceEstimator {
    /// Exact trace, D vector-Jacobian products (batched).
    Exact,
    /// Hutchinson's unbiased estimator with the given probe distribution.
    Hutchinson(Noise),
}

/// The probes of one solve: what [`TraceEstimator`] needs, drawn once before the solve so that a
/// batch split across threads uses exactly the probes the whole batch would have used.
#[derive(Debug)]
pub enum Probes {
    /// Exact trace: no random probes.
    Exact,
    /// Hutchinson probes of the ODE state's shape: `[batch, nodes, dims]` for positions, `[batch,
    /// nodes, dims + nf]` for positions and features; zero at padded nodes.
    Hutchinson(Tensor),
}

impl Probes {
    /// Rows `start .. start + len` of the probes (for a shard of the batch).
    pub fn narrow(&self, start: i64, len: i64) -> Probes {
        match self {
            Probes::Exact => Probes::Exact,
            Probes::Hutchinson(eps) => Probes::Hutchinson(eps.narrow(0, start, len)),
        }
    }
}

impl TraceEstimator {
    /// Draws the probes of one solve for a state of `shape` `[batch, nodes, channels]` with
    /// `node_mask [batch, nodes]`, from the libtorch generator.
    pub fn probes(
        self,
        shape: &[i64],
        node_mask: &Tensor,
        kind: Kind,
        device: tch::Device,
    ) -> Probes {
        match self {
            TraceEstimator::Exact => Probes::Exact,
            TraceEstimator::Hutchinson(noise) => {
                Probes::Hutchinson(noise.sample(shape, node_mask, kind, device))
            }
        }
    }
}

impl Noise {
    /// Draws probes of `shape` with padded nodes zeroed by `node_mask [batch, nodes]` (shape is
    /// `[batch, nodes, dims]`). Uses the libtorch generator.
    pub fn sample(
        self,
        shape: &[i64],
        node_mask: &Tensor,
        kind: Kind,
        device: tch::Device,
    ) -> Tensor {
        let eps = match self {
            Noise::Rademacher => Tensor::randint(2, shape, (kind, device)) * 2.0 - 1.0,
            Noise::Gaussian => Tensor::randn(shape, (kind, device)),
        };
        eps * node_mask.to_kind(kind).unsqueeze(-1)
    }
}

fn grad_or_zeros(g: Tensor, like: &Tensor) -> Tensor {
    if g.defined() {
        g
    } else {
        like.zeros_like()
    }
}

/// Hutchinson's estimate `[batch]` of `tr(dv/dx)` for `v [batch, nodes, dims]` computed from `x`
/// (which must require gradients) with probe `eps` of `x`'s shape. With `create_graph` the estimate
/// is differentiable (for training).
///
/// Errors: [`FlowError::Shape`] unless `v`, `x` and `eps` share one rank-3 shape; libtorch's errors.
pub fn hutchinson(
    v: &Tensor,
    x: &Tensor,
    eps: &Tensor,
    create_graph: bool,
) -> Result<Tensor, FlowError> {
    Ok(hutchinson_with_vjp(v, x, eps, create_graph)?.0)
}

/// [`hutchinson`] that also returns the vector-Jacobian product `eps^T (dv/dx)` `[batch, nodes,
/// dims]` it is built from (its squared norm is the Jacobian-Frobenius term of the ODE
/// regulariser, Finlay et al. 2020).
///
/// Errors: as [`hutchinson`].
pub fn hutchinson_with_vjp(
    v: &Tensor,
    x: &Tensor,
    eps: &Tensor,
    create_graph: bool,
) -> Result<(Tensor, Tensor), FlowError> {
    if v.size() != x.size() || eps.size() != x.size() || x.dim() != 3 {
        return Err(FlowError::Shape {
            what: "velocity, positions and probes",
            expected: format!("{:?} for all three", x.size()),
            got: v.size(),
        });
    }
    let vjp = Tensor::f_run_backward(&[(v * eps).sum(v.kind())], &[x], create_graph, create_graph)?;
    let vjp = grad_or_zeros(vjp.into_iter().next().unwrap_or_else(Tensor::new), x);
    let tr = (&vjp * eps).sum_dim_intlist(&[1i64, 2][..], false, v.kind());
    Ok((tr, vjp))
}

/// The one-hot probes of the batched exact trace: `[D, 1, D]` with `probe[k, 0, k] = 1`, D = nodes * dims.
pub fn unit_probes(d: i64, kind: Kind, device: tch::Device) -> Tensor {
    Tensor::eye(d, (kind, device)).unsqueeze(1)
}

/// Exact trace `[batch]` from the replicated evaluation: `v_rep [D * batch, nodes, dims]` computed
/// from `x_rep [D * batch, nodes, dims]` (copy k = rows `k * batch .. (k + 1) * batch`).
///
/// Errors: [`FlowError::Shape`] unless both are `[D * batch, nodes, dims]`; libtorch's errors.
pub fn exact_from_replicas(
    v_rep: &Tensor,
    x_rep: &Tensor,
    create_graph: bool,
) -> Result<Tensor, FlowError> {
    let size = v_rep.size();
    if size != x_rep.size() || size.len() != 3 || size[0] % (size[1] * size[2]).max(1) != 0 {
        return Err(FlowError::Shape {
            what: "replicated velocity and positions",
            expected: "[nodes * dims * batch, nodes, dims], the same for both".into(),
            got: size,
        });
    }
    let d = size[1] * size[2];
    let batch = size[0] / d;
    let probes = unit_probes(d, v_rep.kind(), v_rep.device());
    let selected = (v_rep.reshape([d, batch, d]) * &probes).sum(v_rep.kind());
    let g = Tensor::f_run_backward(&[selected], &[x_rep], create_graph, create_graph)?;
    let g = grad_or_zeros(g.into_iter().next().unwrap_or_else(Tensor::new), x_rep);
    Ok((g.reshape([d, batch, d]) * probes).sum_dim_intlist(&[0i64, 2][..], false, v_rep.kind()))
}
