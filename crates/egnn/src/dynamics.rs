//! Flow dynamics: velocity fields over batches of graphs, and the E-NF dynamics built from an EGNN.

use crate::config::EgnnConfig;
use crate::conv::{EdgeGeometry, Tangents};
use crate::error::EgnnError;
use crate::masks::Masks;
use crate::network::Egnn;
use tch::nn;
use tch::Tensor;

/// The time derivative of a batch of graphs.
#[derive(Debug)]
pub struct Velocity {
    /// Position velocity `[batch, nodes, dims]`, centred over the real nodes, zero at padding.
    pub x: Tensor,
    /// Feature velocity `[batch, nodes, nf]` when the flow also moves features.
    pub h: Option<Tensor>,
}

/// A dynamics model: the velocity of a batch of graphs at time t. It knows nothing about flows,
/// traces or solvers; the flow crate turns it into a continuous normalizing flow.
///
/// Implementations must be E(n) equivariant in the positions if the flow is to be (the GNF
/// baselines of the paper's Table 1 deliberately are not), permutation equivariant over nodes, and
/// must keep the position velocity centred so the flow stays on the zero-centre-of-mass subspace.
pub trait Dynamics {
    /// Velocity at time `t` (in [0, 1]) of positions `x [batch, nodes, dims]` and, for flows over
    /// features, node features `h [batch, nodes, nf]`, for graphs with masks `masks`.
    ///
    /// Errors: shapes that do not fit the model ([`EgnnError::Shape`]), libtorch errors.
    fn velocity(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<Velocity, EgnnError>;

    /// For dynamics over positions alone whose divergence has a closed form: the position
    /// velocity `[batch, nodes, dims]` and its divergence `tr(dv/dx)` `[batch]` (over all nodes x
    /// dims entries), both differentiable by autograd. The flow then uses it instead of a trace
    /// estimator. `None` (the default): the flow estimates the trace.
    ///
    /// Errors: as [`Dynamics::velocity`].
    fn velocity_and_divergence(
        &self,
        _t: f64,
        _x: &Tensor,
        _masks: &Masks,
    ) -> Option<Result<(Tensor, Tensor), EgnnError>> {
        None
    }

    /// Forward-mode derivative: the velocity at `(x, h)` and its directional derivative `J (dx,
    /// dh)` along the tangent `dx [batch, nodes, dims]`, `dh [batch, nodes, nf]` (`None`: zero; a
    /// `dh` for dynamics without features is an error), both differentiable by autograd. With it
    /// a flow computes Hutchinson's `eps^T J eps` from `J eps` in the same pass as the velocity,
    /// and training differentiates that pass once instead of differentiating a vector-Jacobian
    /// product (a second backward pass). `None` (the default): the flow uses autograd's
    /// vector-Jacobian product.
    ///
    /// Returns `(velocity, tangent of the velocity)`; the tangent's `h` is `Some` exactly when the
    /// velocity's is.
    ///
    /// Errors: as [`Dynamics::velocity`]; [`EgnnError::Shape`] for tangents unlike `x` or `h`.
    fn velocity_jvp(
        &self,
        _t: f64,
        _x: &Tensor,
        _h: Option<&Tensor>,
        _dx: &Tensor,
        _dh: Option<&Tensor>,
        _masks: &Masks,
    ) -> Option<Result<(Velocity, Velocity), EgnnError>> {
        None
    }
}

/// Checks that the node features `h` fit dynamics with `node_nf` flowing features per node
/// (none when `node_nf = 0`; `[size[0], size[1], node_nf]` otherwise, `size` being the
/// positions' shape). `none` says what a model without features expects ("none (particle
/// system)").
///
/// Errors: [`EgnnError::Shape`] naming what was received.
pub(crate) fn check_features<'a>(
    h: Option<&'a Tensor>,
    node_nf: i64,
    size: &[i64],
    none: &str,
) -> Result<Option<&'a Tensor>, EgnnError> {
    match (h, node_nf) {
        (None, 0) => Ok(None),
        (Some(h), nf) if nf > 0 && h.size() == [size[0], size[1], nf] => Ok(Some(h)),
        (h, nf) => Err(EgnnError::Shape {
            what: "node features",
            expected: if nf == 0 {
                none.into()
            } else {
                format!("[{}, {}, {nf}]", size[0], size[1])
            },
            got: h.map(|h| h.size()).unwrap_or_default(),
        }),
    }
}

/// Checks the tangents of a forward-mode derivative ([`Dynamics::velocity_jvp`]): `dx` of the
/// positions' shape `size`, `dh` of the features' shape, and no `dh` without features (`none` says
/// what a model without features expects, as in [`check_features`]).
///
/// Errors: [`EgnnError::Shape`] naming the tangent and what was received.
pub(crate) fn check_tangents(
    size: &[i64],
    h: Option<&Tensor>,
    dx: &Tensor,
    dh: Option<&Tensor>,
    none: &str,
) -> Result<(), EgnnError> {
    if dx.size() != size {
        return Err(EgnnError::Shape {
            what: "tangent of the positions",
            expected: format!("{size:?} (the positions' shape)"),
            got: dx.size(),
        });
    }
    match (h, dh) {
        (Some(h), Some(dh)) if dh.size() != h.size() => Err(EgnnError::Shape {
            what: "tangent of the node features",
            expected: format!("{:?} (the features' shape)", h.size()),
            got: dh.size(),
        }),
        (None, Some(dh)) => Err(EgnnError::Shape {
            what: "tangent of the node features",
            expected: none.into(),
            got: dh.size(),
        }),
        _ => Ok(()),
    }
}

/// Checks that `x` is positions `[batch, nodes, dims]` fitting `masks`, with `dims = n_dims` when
/// the dynamics fix it (`None`: any); returns its shape.
///
/// Errors: [`EgnnError::Shape`] naming what was expected and received.
pub(crate) fn check_positions(
    x: &Tensor,
    masks: &Masks,
    n_dims: Option<i64>,
) -> Result<Vec<i64>, EgnnError> {
    let size = x.size();
    if size.len() != 3 || n_dims.is_some_and(|n| size[2] != n) {
        return Err(EgnnError::Shape {
            what: "positions",
            expected: match n_dims {
                Some(n) => format!("[batch, nodes, {n}]"),
                None => "[batch, nodes, dims]".into(),
            },
            got: size,
        });
    }
    masks.check_fits(x)?;
    Ok(size)
}

/// Refuses node features for dynamics that move positions only; `expected` says which
/// ("none (kernel dynamics move positions only)").
///
/// Errors: [`EgnnError::Shape`] when `h` is given.
pub(crate) fn positions_only(h: Option<&Tensor>, expected: &str) -> Result<(), EgnnError> {
    match h {
        Some(h) => Err(EgnnError::Shape {
            what: "node features",
            expected: expected.into(),
            got: h.size(),
        }),
        None => Ok(()),
    }
}

/// The E-NF dynamics (FACTS.md section 1): an EGNN whose node input is the flow's features with the
/// time t appended (particle systems have no features: their single input feature is t itself, or
/// a constant 1 without time conditioning, as in the reference), whose edges carry the
/// squared distances of the ODE state as an attribute, and whose output velocity is `x_L - x_0` with
/// its mean over the real nodes removed. For flows over features the feature velocity is the EGNN's
/// output features without the time channel.
///
/// Parameters under `path`: `egnn.*` (see [`Egnn`]).
#[derive(Debug)]
pub struct EgnnDynamics {
    egnn: Egnn,
    node_nf: i64,
    condition_time: bool,
}

impl EgnnDynamics {
    /// Dynamics for graphs with `node_nf` flowing features per node (0 for particle systems).
    ///
    /// Errors: [`EgnnError::Config`] for invalid hyper-parameters or a negative `node_nf`.
    pub fn new(path: nn::Path, config: &EgnnConfig, node_nf: i64) -> Result<Self, EgnnError> {
        if node_nf < 0 {
            return Err(EgnnError::Config(format!(
                "node_nf = {node_nf} must be >= 0"
            )));
        }
        let in_nf = if node_nf == 0 {
            1
        } else {
            node_nf + i64::from(config.condition_time)
        };
        let egnn = Egnn::new(&path / "egnn", config, in_nf, in_nf, 1)?;
        Ok(EgnnDynamics {
            egnn,
            node_nf,
            condition_time: config.condition_time,
        })
    }

    fn node_input(&self, t: f64, x: &Tensor, h: Option<&Tensor>) -> Result<Tensor, EgnnError> {
        let size = x.size();
        let (b, m) = (size[0], size[1]);
        let opts = (x.kind(), x.device());
        Ok(match (h, self.condition_time) {
            (None, true) => Tensor::full([b, m, 1], t, opts),
            (None, false) => Tensor::ones([b, m, 1], opts),
            (Some(h), true) => Tensor::cat(&[h, &Tensor::full([b, m, 1], t, opts)], -1),
            (Some(h), false) => h.shallow_clone(),
        })
    }
}

impl Dynamics for EgnnDynamics {
    fn velocity(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<Velocity, EgnnError> {
        let size = check_positions(x, masks, None)?;
        check_features(h, self.node_nf, &size, "none (particle system)")?;
        let node_input = self.node_input(t, x, h)?;
        let out = self.egnn_pass(&node_input, None, x, None, masks)?;
        self.output(x, &out.h, &out.x, masks)
    }

    fn velocity_jvp(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        dx: &Tensor,
        dh: Option<&Tensor>,
        masks: &Masks,
    ) -> Option<Result<(Velocity, Velocity), EgnnError>> {
        Some(self.jvp(t, x, h, dx, dh, masks))
    }
}

impl EgnnDynamics {
    /// The velocity from the EGNN's output: `x_out - x` centred over the real nodes, and the
    /// output features without the time channel.
    fn output(
        &self,
        x: &Tensor,
        h_out: &Tensor,
        x_out: &Tensor,
        masks: &Masks,
    ) -> Result<Velocity, EgnnError> {
        let node_mask = (!masks.all_real).then_some(&masks.node);
        let vx = geometry::centre(&(x_out - x), node_mask)?;
        let vh = (self.node_nf > 0).then(|| h_out.narrow(-1, 0, self.node_nf));
        Ok(Velocity { x: vx, h: vh })
    }

    /// The EGNN on `node_input` and `x` (with tangents `d_node_input`, `dx`, or none), its edge
    /// attributes the squared distances of `x`, whose edge geometry the first layer reuses.
    fn egnn_pass(
        &self,
        node_input: &Tensor,
        d_node_input: Option<Tensor>,
        x: &Tensor,
        dx: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<crate::network::JvpOutput, EgnnError> {
        let geometry = EdgeGeometry::new(x, dx, masks);
        let (edge_attr, d_edge_attr) = geometry.radial_neighbour_layout(masks);
        let tangents = Tangents {
            h: d_node_input,
            x: dx.map(Tensor::shallow_clone),
            edge_attr: d_edge_attr,
        };
        self.egnn.forward_jvp_with_geometry(
            node_input,
            x,
            Some(&edge_attr),
            Some(&geometry),
            masks,
            &tangents,
        )
    }

    /// [`Dynamics::velocity_jvp`]: the EGNN's forward pass with tangents
    /// ([`Egnn::forward_jvp`]); the velocity is linear in the network's output, so its tangent is
    /// the same map of the output tangents.
    fn jvp(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        dx: &Tensor,
        dh: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<(Velocity, Velocity), EgnnError> {
        let size = check_positions(x, masks, None)?;
        let h = check_features(h, self.node_nf, &size, "none (particle system)")?;
        check_tangents(&size, h, dx, dh, "none (particle system)")?;
        let node_input = self.node_input(t, x, h)?;
        let d_node_input = dh.map(|dh| {
            if self.condition_time {
                let size = dh.size();
                let zeros = Tensor::zeros([size[0], size[1], 1], (dh.kind(), dh.device()));
                Tensor::cat(&[dh, &zeros], -1)
            } else {
                dh.shallow_clone()
            }
        });
        let out = self.egnn_pass(&node_input, d_node_input, x, Some(dx), masks)?;
        let v = self.output(x, &out.h, &out.x, masks)?;
        let dh_out = out.dh.unwrap_or_else(|| out.h.zeros_like());
        let dx_out = out.dx.unwrap_or_else(|| out.x.zeros_like());
        let dv = self.output(dx, &dh_out, &dx_out, masks)?;
        Ok((v, dv))
    }
}
