//! GNF dynamics, the graph-normalizing-flow baselines of the E-NF paper's Table 1 (GNF, GNF-att,
//! GNF-att-aug; FACTS.md section 3): the same continuous flow with a plain graph neural network as
//! its velocity field. Positions enter as node features, so the model is permutation equivariant
//! but *not* E(n) equivariant; GNF-att-aug makes up for it by training on randomly rotated batches
//! (done by the training loop, not here).
//!
//! One graph convolution (Gilmer et al. 2017, the GCL of the reference implementation), over the
//! edges (i, j), i != j, of the fully connected graph:
//!
//! - message `m_ij = phi_e(h_i, h_j)`, `phi_e` = Linear-SiLU-Linear-SiLU, optionally gated:
//!   `m_ij <- m_ij * sigmoid(Linear(m_ij))` (GNF-att);
//! - features `h_i <- h_i + phi_h(h_i, sum_j m_ij)`, `phi_h` = Linear-SiLU-Linear.
//!
//! The network embeds the node input `[t, x_i]` (the time, or a constant 1 without time
//! conditioning, then the coordinates) into `hidden_nf` features, applies `n_layers`
//! convolutions and maps the result to `n` outputs per node: the velocity, with its mean over the
//! real nodes removed. For flows over positions and node features (the QM9 GNF baselines of the
//! paper's Table 2, [`GnnDynamics::with_features`]) the node input is `[t, x_i, h_i]` and the
//! output `[v_x, v_h]`: `n + nf` values per node, the position part centred, the feature part
//! zero at padded nodes. As in [`crate::conv`], the first edge layer is split into per-node products
//! so that no `[edges, 2 hidden]` concatenation is built.
//!
//! The dynamics have a forward-mode derivative ([`Dynamics::velocity_jvp`], the network's pass with
//! tangents, [`GraphConv::forward_jvp`]), so a flow takes their Hutchinson trace from `J eps` as
//! for the E-NF. Measured on the default profile's trained GNF-att models (`step_timing`, two
//! workers, two alternated runs each, 2026-12-01): DW4 8.0 / 8.2 ms per evaluation against 9.5 /
//! 9.7 by the vector-Jacobian product, LJ13 46 / 42 against 53 / 51 ms.

use crate::config::EgnnConfig;
use crate::conv::silu_jvp;
use crate::dynamics::{check_features, check_positions, check_tangents, Dynamics, Velocity};
use crate::error::EgnnError;
use crate::linear::{split_edge_input, Linear};
use crate::masks::{gather_neighbours, Masks};
use tch::nn::{self, Module};
use tch::Tensor;

/// One graph convolution of width `hidden_nf`, messages from the two end points' features only.
///
/// Parameters under `path`: `edge_mlp.linear_in.source` (`[hidden, hidden]`, applied to h_i,
/// with the layer's bias) and `edge_mlp.linear_in.target` (`[hidden, hidden]`, h_j, no bias),
/// together the reference's `edge_mlp.0` with its columns split; `edge_mlp.linear_out`,
/// `attention.linear` (if attention), `node_mlp.linear_in` (`[hidden, 2 hidden]`, columns h_i then
/// the aggregated message), `node_mlp.linear_out`.
#[derive(Debug)]
pub struct GraphConv {
    edge_source: Linear,
    edge_target: Linear,
    edge_out: Linear,
    attention: Option<Linear>,
    node_in: Linear,
    node_out: Linear,
}

impl GraphConv {
    /// A convolution of width `hidden_nf`, gated by attention if `attention`.
    pub fn new(path: nn::Path, hidden_nf: i64, attention: bool) -> Self {
        let edge = &path / "edge_mlp";
        let edge_in = &edge / "linear_in";
        let node = &path / "node_mlp";
        let (edge_source, edge_target) = split_edge_input(&edge_in, hidden_nf, 2 * hidden_nf);
        GraphConv {
            edge_source,
            edge_target,
            edge_out: Linear::new(&edge / "linear_out", hidden_nf, hidden_nf),
            attention: attention.then(|| Linear::new(&path / "attention" / "linear", hidden_nf, 1)),
            node_in: Linear::new(&node / "linear_in", 2 * hidden_nf, hidden_nf),
            node_out: Linear::new(&node / "linear_out", hidden_nf, hidden_nf),
        }
    }

    /// Applies the convolution to `h [batch, nodes, hidden]`; returns the new features, same shape,
    /// zero at padded nodes.
    pub fn forward(&self, h: &Tensor, masks: &Masks) -> Tensor {
        self.forward_jvp(h, None, masks).0
    }

    /// [`GraphConv::forward`] with the tangent of its output for a tangent `dh` of `h` (same
    /// shape; `None`: no tangent, and none returned). The features are those of the plain forward
    /// pass, bit for bit; the tangent is differentiable by autograd when its inputs are.
    ///
    /// Panics (in libtorch) when `h` or `dh` is not `[batch, nodes, hidden]` of the layer's kind
    /// and device; [`GnnDynamics`] checks its inputs before calling it.
    // `a = a * b` on purpose: `*=` on a tensor is libtorch's in-place op inside an autograd graph.
    #[allow(clippy::assign_op_pattern)]
    pub fn forward_jvp(
        &self,
        h: &Tensor,
        dh: Option<&Tensor>,
        masks: &Masks,
    ) -> (Tensor, Option<Tensor>) {
        let neighbours = |v: &Tensor| gather_neighbours(v, &masks.neighbours);
        // Messages m_ij = phi_e(h_i, h_j) over [B, M, M-1, H], the first layer split into the
        // source's product (with the bias) and the gathered target's.
        let z = self.edge_source.forward(h).unsqueeze(2) + neighbours(&self.edge_target.forward(h));
        let dz = dh.map(|dh| {
            self.edge_source.tangent(dh).unsqueeze(2) + neighbours(&self.edge_target.tangent(dh))
        });
        let (a, da) = silu_jvp(&z, dz);
        let z = self.edge_out.forward(&a);
        let dz = da.map(|da| self.edge_out.tangent(&da));
        let (mut m, mut dm) = silu_jvp(&z, dz);
        if let Some(att) = &self.attention {
            // m <- m g with g = sigmoid(att(m)): dm <- dm g + m g (1 - g) att'(dm).
            let g = att.forward(&m).sigmoid();
            dm = dm.map(|dm| {
                let dg = &g * (g.ones_like() - &g) * att.tangent(&dm);
                dm * &g + &m * dg
            });
            m = &m * g;
        }
        if !masks.all_real {
            m = m * &masks.edge;
            dm = dm.map(|dm| dm * &masks.edge);
        }
        // h_i <- h_i + phi_h(h_i, sum_j m_ij), the sum over the edges giving [B, M, H].
        let sum_edges = |m: &Tensor| m.sum_dim_intlist(&[2i64][..], false, m.kind());
        let z = self.node_in.forward(&Tensor::cat(&[h, &sum_edges(&m)], -1));
        let dz = dm.zip(dh).map(|(dm, dh)| {
            self.node_in
                .tangent(&Tensor::cat(&[dh, &sum_edges(&dm)], -1))
        });
        let (a, da) = silu_jvp(&z, dz);
        let mut h_new = h + self.node_out.forward(&a);
        let mut dh_new = da.zip(dh).map(|(da, dh)| dh + self.node_out.tangent(&da));
        if !masks.all_real {
            let node = masks.node.unsqueeze(-1);
            h_new = h_new * &node;
            dh_new = dh_new.map(|d| d * &node);
        }
        (h_new, dh_new)
    }
}

/// The GNF dynamics: velocity `v = GNN([t, x])` with its mean removed, or, over positions and
/// `node_nf` features, `[v_x, v_h] = GNN([t, x, h])` with `v_x` centred and `v_h` zero at padding.
/// Uses `hidden_nf`, `n_layers`, `attention` and `condition_time` of [`EgnnConfig`] (`tanh`,
/// `coords_range` and `aggregation` concern coordinate updates, which a GNN does not have).
///
/// Parameters under `path`: `gnn.embedding_in` (`[hidden, 1 + dims + node_nf]`, columns t, x, h),
/// `gnn.layers.<l>` (see [`GraphConv`]), `gnn.embedding_out` (`[dims + node_nf, hidden]`, rows
/// v_x then v_h).
#[derive(Debug)]
pub struct GnnDynamics {
    embedding_in: Linear,
    layers: Vec<GraphConv>,
    embedding_out: Linear,
    n_dims: i64,
    node_nf: i64,
    condition_time: bool,
}

impl GnnDynamics {
    /// GNF dynamics for positions in `n_dims` dimensions (particle systems: no node features).
    ///
    /// Errors: [`EgnnError::Config`] for invalid hyper-parameters or `n_dims < 1`.
    pub fn new(path: nn::Path, config: &EgnnConfig, n_dims: i64) -> Result<Self, EgnnError> {
        Self::with_features(path, config, n_dims, 0)
    }

    /// GNF dynamics for flows over positions in `n_dims` dimensions and `node_nf` node features
    /// per node (the QM9 GNF baselines: `n_dims = 3`, `node_nf = 6`); `node_nf = 0` is
    /// [`GnnDynamics::new`].
    ///
    /// Errors: [`EgnnError::Config`] for invalid hyper-parameters, `n_dims < 1` or `node_nf < 0`.
    pub fn with_features(
        path: nn::Path,
        config: &EgnnConfig,
        n_dims: i64,
        node_nf: i64,
    ) -> Result<Self, EgnnError> {
        config.validate()?;
        if n_dims < 1 {
            return Err(EgnnError::Config(format!("n_dims = {n_dims} must be >= 1")));
        }
        if node_nf < 0 {
            return Err(EgnnError::Config(format!(
                "node_nf = {node_nf} must be >= 0"
            )));
        }
        let gnn = &path / "gnn";
        let hidden = config.hidden_nf;
        Ok(GnnDynamics {
            embedding_in: Linear::new(&gnn / "embedding_in", 1 + n_dims + node_nf, hidden),
            layers: (0..config.n_layers)
                .map(|l| GraphConv::new(&gnn / "layers" / l, hidden, config.attention))
                .collect(),
            embedding_out: Linear::new(&gnn / "embedding_out", hidden, n_dims + node_nf),
            n_dims,
            node_nf,
            condition_time: config.condition_time,
        })
    }
}

impl GnnDynamics {
    /// The velocity at `(x, h)` and, with tangents `(dx, dh)` (`dh` `None`: zero), its tangent:
    /// the network's forward pass with tangents ([`GraphConv::forward_jvp`]), the output map being
    /// linear. Checks the positions and features (and the tangents' shapes, when given).
    ///
    /// Errors: as [`Dynamics::velocity`] and [`Dynamics::velocity_jvp`].
    fn velocity_with_tangent(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        tangent: Option<(&Tensor, Option<&Tensor>)>,
        masks: &Masks,
    ) -> Result<(Velocity, Option<Velocity>), EgnnError> {
        let none = "none (GNF dynamics over positions only)";
        let size = check_positions(x, masks, Some(self.n_dims))?;
        let features = check_features(h, self.node_nf, &size, none)?;
        if let Some((dx, dh)) = tangent {
            check_tangents(&size, features, dx, dh, none)?;
        }
        let opts = (x.kind(), x.device());
        let time = if self.condition_time { t } else { 1.0 };
        let time = Tensor::full([size[0], size[1], 1], time, opts);
        let input = match features {
            Some(f) => Tensor::cat(&[&time, x, f], -1),
            None => Tensor::cat(&[&time, x], -1),
        };
        // The input's tangent: none for the time channel, dx, then dh (zero if not given).
        let d_input = tangent.map(|(dx, dh)| {
            let d_time = Tensor::zeros([size[0], size[1], 1], opts);
            match (features, dh) {
                (None, _) => Tensor::cat(&[&d_time, dx], -1),
                (Some(_), Some(dh)) => Tensor::cat(&[&d_time, dx, dh], -1),
                (Some(f), None) => Tensor::cat(&[&d_time, dx, &f.zeros_like()], -1),
            }
        });
        let mut h = self.embedding_in.forward(&input);
        let mut dh = d_input.map(|d| self.embedding_in.tangent(&d));
        for layer in &self.layers {
            (h, dh) = layer.forward_jvp(&h, dh.as_ref(), masks);
        }
        let out = self.embedding_out.forward(&h);
        let v = self.output(&out, features.is_some(), masks)?;
        let dv = match dh {
            Some(dh) => {
                Some(self.output(&self.embedding_out.tangent(&dh), features.is_some(), masks)?)
            }
            None => None,
        };
        Ok((v, dv))
    }

    /// The velocity from the network's output `out [B, M, dims + node_nf]` (or its tangent: the
    /// map is linear): `v_x` centred over the real nodes, `v_h` (with features) zero at padding.
    fn output(&self, out: &Tensor, features: bool, masks: &Masks) -> Result<Velocity, EgnnError> {
        let node_mask = (!masks.all_real).then_some(&masks.node);
        let vx = geometry::centre(&out.narrow(-1, 0, self.n_dims), node_mask)?;
        let vh = features.then(|| {
            let vh = out.narrow(-1, self.n_dims, self.node_nf);
            match node_mask {
                Some(m) => vh * m.unsqueeze(-1),
                None => vh,
            }
        });
        Ok(Velocity { x: vx, h: vh })
    }
}

impl Dynamics for GnnDynamics {
    /// Errors: [`EgnnError::Shape`] for positions that are not `[batch, nodes, n_dims]` fitting
    /// the masks, or for node features that are not `[batch, nodes, node_nf]` (none when
    /// `node_nf = 0`).
    fn velocity(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<Velocity, EgnnError> {
        Ok(self.velocity_with_tangent(t, x, h, None, masks)?.0)
    }

    /// Errors: as [`GnnDynamics::velocity`]; [`EgnnError::Shape`] for tangents unlike `x` or `h`.
    fn velocity_jvp(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        dx: &Tensor,
        dh: Option<&Tensor>,
        masks: &Masks,
    ) -> Option<Result<(Velocity, Velocity), EgnnError>> {
        Some(
            self.velocity_with_tangent(t, x, h, Some((dx, dh)), masks)
                .map(|(v, dv)| (v, dv.expect("a tangent was given"))),
        )
    }
}
