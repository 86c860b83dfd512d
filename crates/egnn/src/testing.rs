//! Fixtures for tests and benchmarks: small E-NF dynamics in a chosen dtype with parameters drawn
//! large enough that every part of the network matters (the default initialisation makes the
//! coordinate updates tiny, which would let an equivariance bug hide below round-off).

use crate::config::EgnnConfig;
use crate::dynamics::{Dynamics, EgnnDynamics};
use crate::error::EgnnError;
use crate::masks::Masks;
use tch::{nn, Device, Kind, Tensor};

/// E-NF dynamics for particle systems (no node features) with `config`, every parameter redrawn
/// from N(0, `std`^2) with libtorch's generator seeded by `seed`, converted to `kind`.
/// Returns the var store (which owns the parameters) and the dynamics. Call it while holding
/// [`geometry::testing::seeded`]'s guard if other tests of the process draw random numbers.
///
/// Errors: [`EgnnError::Config`] for an invalid configuration.
pub fn random_dynamics(
    config: &EgnnConfig,
    seed: i64,
    std: f64,
    kind: Kind,
) -> Result<(nn::VarStore, EgnnDynamics), EgnnError> {
    tch::manual_seed(seed);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let dynamics = EgnnDynamics::new(vs.root(), config, 0)?;
    vs.set_kind(kind);
    randomise_parameters(&vs, std);
    Ok((vs, dynamics))
}

/// Redraws every trainable variable of `vs` from N(0, `std`^2) with libtorch's generator, in name
/// order (the var store's map iterates in a different order in every process); fixed variables
/// (kernel centres) are kept. Seed the generator first for reproducible draws.
pub fn randomise_parameters(vs: &nn::VarStore, std: f64) {
    let mut variables: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, v)| v.requires_grad())
        .collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (_, mut v) in variables {
            let draw = Tensor::randn(v.size(), (v.kind(), v.device())) * std;
            v.copy_(&draw);
        }
    });
}

/// The trace of the Jacobian of the position velocity, `tr(dv/dx)` per graph `[batch]`, built
/// column by column: one vector-Jacobian product per state entry (nodes x dims of them) on
/// positions `x [batch, nodes, dims]` at time `t`. The slow, obviously correct reference that
/// batched and closed-form traces are tested against.
///
/// Errors: the dynamics' errors; [`EgnnError::Torch`] if libtorch cannot differentiate.
pub fn trace_by_columns(
    dynamics: &impl Dynamics,
    t: f64,
    x: &Tensor,
    masks: &Masks,
) -> Result<Tensor, EgnnError> {
    let x = x.detach().set_requires_grad(true);
    let v = dynamics.velocity(t, &x, None, masks)?.x;
    let size = x.size();
    let mut total = Tensor::zeros([size[0]], (x.kind(), x.device()));
    for i in 0..size[1] {
        for k in 0..size[2] {
            let column = v.select(1, i).select(1, k).sum(x.kind());
            let g = Tensor::f_run_backward(&[column], &[&x], true, false)?.remove(0);
            total += g.select(1, i).select(1, k);
        }
    }
    Ok(total)
}

/// What padding changes: graph `x [1, nodes, dims]` alone and with `extra` padded nodes (at the
/// origin, masked out) appended, at time `t`. Returns the largest change of the real nodes'
/// velocity, the largest velocity entry of a padded node (both should be 0 up to round-off) and
/// the change of the closed-form divergence (0 for dynamics without one).
///
/// Errors: the dynamics' errors.
pub fn padding_effect(
    dynamics: &impl Dynamics,
    t: f64,
    x: &Tensor,
    extra: i64,
) -> Result<(f64, f64, f64), EgnnError> {
    let size = x.size();
    let opts = (x.kind(), x.device());
    let padded = Tensor::cat(&[x, &Tensor::zeros([1, extra, size[2]], opts)], 1);
    let mask = Tensor::cat(
        &[
            Tensor::ones([1, size[1]], opts),
            Tensor::zeros([1, extra], opts),
        ],
        1,
    );
    let full = Masks::full(1, size[1], x.kind(), x.device());
    let masks = Masks::from_node_mask(&mask);
    let v = dynamics.velocity(t, x, None, &full)?.x;
    let vp = dynamics.velocity(t, &padded, None, &masks)?.x;
    let max = |t: Tensor| t.abs().max().double_value(&[]);
    let div_change = match (
        dynamics.velocity_and_divergence(t, x, &full),
        dynamics.velocity_and_divergence(t, &padded, &masks),
    ) {
        (Some(a), Some(b)) => max(b?.1 - a?.1),
        _ => 0.0,
    };
    Ok((
        max(vp.narrow(1, 0, size[1]) - v),
        max(vp.narrow(1, size[1], extra)),
        div_change,
    ))
}
