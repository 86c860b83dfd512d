//! One E(n) equivariant graph convolution (EGCL) with the stabilised coordinate update of E-NF.
//!
//! Over the edges (i, j), i != j, of the fully connected graph (Satorras et al. 2021, eqs. 3-6 of
//! the EGNN paper, with eq. 9 of the E-NF paper for the coordinates):
//!
//! - message `m_ij = phi_e(h_i, h_j, ||x_i - x_j||^2, a_ij)`, `phi_e` = Linear-SiLU-Linear-SiLU,
//!   optionally gated: `m_ij <- m_ij * sigmoid(Linear(m_ij))`;
//! - coordinates `x_i <- x_i + sum_j (x_i - x_j) / (sqrt(||x_i - x_j||^2 + 1e-8) + 1) * phi_x(m_ij)`,
//!   `phi_x` = Linear-SiLU-Linear (no bias, Xavier gain 0.001), bounded by
//!   `tanh(.) * coords_range / n_layers` when tanh is on;
//! - features `h_i <- h_i + phi_h(h_i, sum_j m_ij)`, `phi_h` = Linear-SiLU-Linear.
//!
//! Dense formulation over the neighbour layout of [`Masks`] (edge tensors `[batch, nodes, nodes -
//! 1, ...]`, no self-loops): the first layer of `phi_e` is split into per-node products
//! `h W_src^T` and `h W_dst^T` (`[batch, nodes, hidden]`), the first broadcast over neighbours and
//! the second gathered, so no `[edges, 2 hidden]` concatenation is ever built. For batches without
//! padding no masking operation is needed at all.

use crate::config::Aggregation;
use crate::linear::{split_edge_input, Linear};
use crate::masks::{gather_neighbours, neighbour_differences, Masks};
use tch::nn::{self, Module};
use tch::Tensor;

/// Added under the square root of the distance so that coincident nodes give finite updates.
pub const NORM_EPS: f64 = 1e-8;
/// The constant C of eq. 9: the coordinate difference is divided by (distance + C).
pub const NORM_CONSTANT: f64 = 1.0;

/// One equivariant convolution with `hidden_nf` features in and out.
///
/// Parameters under `path`: the first edge layer as three blocks, `edge_mlp.linear_in.source`
/// (`[hidden, hidden]`, applied to h_i, with the layer's bias), `edge_mlp.linear_in.target`
/// (`[hidden, hidden]`, h_j, no bias) and `edge_mlp.linear_in.scalars` (`[hidden, 1 +
/// edge_attr_nf]`, the squared distance then the edge attributes, no bias): together the reference's
/// `edge_mlp.0` with its columns split. Then `edge_mlp.linear_out`, `attention.linear`
/// (if attention), `coord_mlp.linear_in`, `coord_mlp.linear_out` (`[1, hidden]`, no bias),
/// `node_mlp.linear_in` (`[hidden, 2 hidden]`, columns h_i then the aggregated message),
/// `node_mlp.linear_out`.
#[derive(Debug)]
pub struct EquivariantConv {
    edge_source: Linear,
    edge_target: Linear,
    edge_scalars: Linear,
    edge_out: Linear,
    attention: Option<Linear>,
    coord_in: Linear,
    coord_out: Linear,
    node_in: Linear,
    node_out: Linear,
    /// `Some(range)`: coordinate weights are `tanh(phi_x) * range`.
    coords_range: Option<f64>,
    aggregation: Aggregation,
}

impl EquivariantConv {
    /// A convolution of width `hidden_nf` taking `edge_attr_nf` extra edge attributes.
    /// `coords_range` is the per-layer range (`Some(coords_range / n_layers)`) or `None` for no tanh.
    pub fn new(
        path: nn::Path,
        hidden_nf: i64,
        edge_attr_nf: i64,
        attention: bool,
        coords_range: Option<f64>,
        aggregation: Aggregation,
    ) -> Self {
        let edge = &path / "edge_mlp";
        let coord = &path / "coord_mlp";
        let node = &path / "node_mlp";
        // One fan-in for the three blocks, as for the single reference layer they replace.
        let fan_in = 2 * hidden_nf + 1 + edge_attr_nf;
        let edge_in = &edge / "linear_in";
        let (edge_source, edge_target) = split_edge_input(&edge_in, hidden_nf, fan_in);
        EquivariantConv {
            edge_source,
            edge_target,
            edge_scalars: Linear::with_fan_in(
                &edge_in / "scalars",
                1 + edge_attr_nf,
                hidden_nf,
                fan_in,
                false,
            ),
            edge_out: Linear::new(&edge / "linear_out", hidden_nf, hidden_nf),
            attention: attention.then(|| Linear::new(&path / "attention" / "linear", hidden_nf, 1)),
            coord_in: Linear::new(&coord / "linear_in", hidden_nf, hidden_nf),
            coord_out: Linear::xavier_no_bias(&coord / "linear_out", hidden_nf, 1, 0.001),
            node_in: Linear::new(&node / "linear_in", 2 * hidden_nf, hidden_nf),
            node_out: Linear::new(&node / "linear_out", hidden_nf, hidden_nf),
            coords_range,
            aggregation,
        }
    }

    /// Applies the convolution.
    ///
    /// - `h [batch, nodes, hidden]`, `x [batch, nodes, dims]`;
    /// - `edge_attr [batch, nodes, nodes - 1, edge_attr_nf]` in the neighbour layout (the squared
    ///   distances of the ODE state for E-NF dynamics), or `None` when the layer was built with
    ///   `edge_attr_nf = 0`;
    /// - `radial`: `||x_i - x_j||^2` as `[batch, nodes, nodes - 1, 1]` if the caller already has it.
    ///
    /// Returns `(h', x')` of the same shapes; padded nodes keep zero features and their positions.
    // `a = a * b` on purpose: `*=` on a tensor is libtorch's in-place op, which would overwrite
    // values autograd saved for the backward pass.
    #[allow(clippy::assign_op_pattern)]
    pub fn forward(
        &self,
        h: &Tensor,
        x: &Tensor,
        edge_attr: Option<&Tensor>,
        radial: Option<&Tensor>,
        masks: &Masks,
    ) -> (Tensor, Tensor) {
        let diff = neighbour_differences(x, &masks.neighbours); // [B, M, M-1, n]: x_i - x_j
        let radial = match radial {
            Some(r) => r.shallow_clone(),
            None => diff.square().sum_dim_intlist(&[-1i64][..], true, x.kind()),
        };

        // First edge layer, split: W = [W_src | W_dst | w_radial | W_attr].
        let src = self.edge_source.forward(h); // [B, M, H], with the bias
        let dst = gather_neighbours(&self.edge_target.forward(h), &masks.neighbours); // [B, M, M-1, H]
        let pair_scalars = match edge_attr {
            Some(a) => Tensor::cat(&[&radial, a], -1),
            None => radial.shallow_clone(),
        };
        let pre = self.edge_scalars.forward(&pair_scalars) + src.unsqueeze(2) + dst; // [B, M, M-1, H]
        let mut m = self.edge_out.forward(&pre.silu()).silu();
        if let Some(att) = &self.attention {
            m = &m * att.forward(&m).sigmoid();
        }
        if !masks.all_real {
            m = m * &masks.edge;
        }

        // Coordinates (eq. 9).
        let mut phi = self.coord_out.forward(&self.coord_in.forward(&m).silu()); // [B, M, M-1, 1]
        if let Some(range) = self.coords_range {
            phi = phi.tanh() * range;
        }
        if !masks.all_real {
            phi = phi * &masks.edge;
        }
        let scale = phi / ((&radial + NORM_EPS).sqrt() + NORM_CONSTANT);
        let mut shift = (diff * scale).sum_dim_intlist(&[2i64][..], false, x.kind()); // [B, M, n]
        let mut agg = m.sum_dim_intlist(&[2i64][..], false, m.kind()); // [B, M, H]
        if self.aggregation == Aggregation::Mean {
            let neighbours = masks
                .edge
                .sum_dim_intlist(&[2i64][..], false, x.kind())
                .clamp_min(1.0); // [B, M, 1]
            shift = shift / &neighbours;
            agg = agg / &neighbours;
        }
        let x_new = x + shift;

        // Features (residual).
        let node_input = Tensor::cat(&[h, &agg], -1);
        let mut h_new = h + self
            .node_out
            .forward(&self.node_in.forward(&node_input).silu());
        if !masks.all_real {
            h_new = h_new * masks.node.unsqueeze(-1);
        }
        (h_new, x_new)
    }
}
