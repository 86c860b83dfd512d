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

use crate::config::EgnnConfig;
use crate::dynamics::{check_features, Dynamics, Velocity};
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
    // `a = a * b` on purpose: `*=` on a tensor is libtorch's in-place op inside an autograd graph.
    #[allow(clippy::assign_op_pattern)]
    pub fn forward(&self, h: &Tensor, masks: &Masks) -> Tensor {
        let src = self.edge_source.forward(h); // [B, M, H], with the bias
        let dst = gather_neighbours(&self.edge_target.forward(h), &masks.neighbours); // [B, M, M-1, H]
        let mut m = self
            .edge_out
            .forward(&(src.unsqueeze(2) + dst).silu())
            .silu();
        if let Some(att) = &self.attention {
            m = &m * att.forward(&m).sigmoid();
        }
        if !masks.all_real {
            m = m * &masks.edge;
        }
        let agg = m.sum_dim_intlist(&[2i64][..], false, m.kind()); // [B, M, H]
        let mut h_new = h + self
            .node_out
            .forward(&self.node_in.forward(&Tensor::cat(&[h, &agg], -1)).silu());
        if !masks.all_real {
            h_new = h_new * masks.node.unsqueeze(-1);
        }
        h_new
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
        let size = x.size();
        if size.len() != 3 || size[2] != self.n_dims {
            return Err(EgnnError::Shape {
                what: "positions",
                expected: format!("[batch, nodes, {}]", self.n_dims),
                got: size,
            });
        }
        masks.check_fits(x)?;
        let features = check_features(
            h,
            self.node_nf,
            &size,
            "none (GNF dynamics over positions only)",
        )?;
        let time = if self.condition_time { t } else { 1.0 };
        let time = Tensor::full([size[0], size[1], 1], time, (x.kind(), x.device()));
        let input = match features {
            Some(f) => Tensor::cat(&[&time, x, f], -1),
            None => Tensor::cat(&[&time, x], -1),
        };
        let mut h = self.embedding_in.forward(&input);
        for layer in &self.layers {
            h = layer.forward(&h, masks);
        }
        // [B, M, dims + node_nf]; v_x centred over the real nodes, both parts zero at padding.
        let out = self.embedding_out.forward(&h);
        let node_mask = (!masks.all_real).then_some(&masks.node);
        let vx = geometry::centre(&out.narrow(-1, 0, self.n_dims), node_mask)?;
        let vh = features.map(|_| {
            let vh = out.narrow(-1, self.n_dims, self.node_nf);
            match node_mask {
                Some(m) => vh * m.unsqueeze(-1),
                None => vh,
            }
        });
        Ok(Velocity { x: vx, h: vh })
    }
}
