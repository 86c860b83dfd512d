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
//! Dense formulation over the neighbour layout of [`Masks`] (no self-loops), computed in its flat
//! form: node tensors `[batch * nodes, f]` and edge tensors `[batch * nodes * (nodes - 1), f]`, so
//! every linear layer is a single matrix product (`addmm`) with no reshaping around it, which
//! matters because these tensors are small and the cost is per operation (and per node of the
//! autograd graph, which training differentiates twice). The first layer of `phi_e` is split into
//! per-node products `h W_src^T` and `h W_dst^T` (`[batch * nodes, hidden]`), the first broadcast
//! over neighbours and the second gathered, and the block of the edge scalars is added by the
//! product that applies it, so no `[edges, 2 hidden]` concatenation is ever built. For batches
//! without padding no masking operation is needed at all.

use crate::config::Aggregation;
use crate::error::EgnnError;
use crate::linear::{split_edge_input, Linear};
use crate::masks::{flat_edge_differences, Masks};
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
    hidden_nf: i64,
    edge_attr_nf: i64,
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
            hidden_nf,
            edge_attr_nf,
        }
    }

    /// Applies the convolution.
    ///
    /// - `h [batch, nodes, hidden]`, `x [batch, nodes, dims]`;
    /// - `edge_attr [batch, nodes, nodes - 1, edge_attr_nf]` in the neighbour layout (the squared
    ///   distances of the ODE state for E-NF dynamics), or `None` when the layer was built with
    ///   `edge_attr_nf = 0`;
    ///
    /// Returns `(h', x')` of the same shapes; padded nodes keep zero features and their positions.
    ///
    /// Errors: [`EgnnError::Shape`] for inputs that do not fit each other, the masks or the layer.
    pub fn forward(
        &self,
        h: &Tensor,
        x: &Tensor,
        edge_attr: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<(Tensor, Tensor), EgnnError> {
        check_graph_inputs(h, self.hidden_nf, x, edge_attr, self.edge_attr_nf, masks)?;
        let (h, x, _) = self.forward_jvp(h, x, edge_attr, None, masks, &Tangents::default());
        Ok((h, x))
    }

    /// [`EquivariantConv::forward`] with forward-mode differentiation: also returns the
    /// directional derivative of `(h', x')` along `tangents` of the inputs (`h`, `x`, `edge_attr`
    /// shaped as they are; `None` is a zero tangent and costs nothing). The tangents are built from
    /// ordinary differentiable tensor operations, so autograd can differentiate them once more: a
    /// Jacobian-vector product needs no second backward pass.
    ///
    /// Returns `(h', x', tangents')`; `tangents'.edge_attr` is the input's (the attributes do not
    /// change between layers). `geometry`, when given, must be that of `x` with the tangent
    /// `tangents.x` ([`EdgeGeometry::new`]): it is not checked (only the crate's own dynamics pass
    /// one, built from the same `x` and tangent).
    ///
    /// Shapes are not checked here (a building block of [`crate::Egnn::forward_jvp`], which
    /// checks them and is the public entry point).
    // `a = a * b` on purpose: `*=` on a tensor is libtorch's in-place op, which would overwrite
    // values autograd saved for the backward pass.
    #[allow(clippy::assign_op_pattern)]
    pub(crate) fn forward_jvp(
        &self,
        h: &Tensor,
        x: &Tensor,
        edge_attr: Option<&Tensor>,
        geometry: Option<&EdgeGeometry>,
        masks: &Masks,
        tangents: &Tangents,
    ) -> (Tensor, Tensor, Tangents) {
        let size = x.size();
        let (b, m, n) = (size[0], size[1], size[2]);
        let hidden = h.size()[2];
        // Flat layout: node tensors `[B*M, f]`, edge tensors `[B*M*(M-1), f]`, so that every
        // layer of the MLPs is one matrix product (`addmm`) and the sums over neighbours are
        // views summed over one axis.
        let (nodes, k) = (b * m, (m - 1).max(0));
        let edges = nodes * k;
        let node_rows = |t: &Tensor| t.reshape([nodes, t.size()[2]]);
        let edge_rows = |t: &Tensor| t.reshape([edges, t.size()[3]]);
        let over_neighbours = |t: &Tensor| {
            let f = t.size()[1];
            t.view([nodes, k, f])
                .sum_dim_intlist(&[1i64][..], false, t.kind())
        };
        let xf = node_rows(x);
        let hf = node_rows(h);
        let dxf = tangents.x.as_ref().map(node_rows);
        let dhf = tangents.h.as_ref().map(node_rows);
        let attr = edge_attr.map(edge_rows);
        let d_attr = tangents.edge_attr.as_ref().map(edge_rows);

        let own;
        let geometry = match geometry {
            Some(g) => g,
            None => {
                own = EdgeGeometry::of_rows(&xf, dxf.as_ref(), masks);
                &own
            }
        };
        let (diff, radial) = (&geometry.diff, &geometry.radial); // [E, n], [E, 1]
        let (d_diff, d_radial) = (geometry.d_diff.as_ref(), geometry.d_radial.as_ref());

        // First edge layer, split: W = [W_src | W_dst | w_radial | W_attr]; the source and target
        // blocks applied per node, the scalar block added by the same product that applies it.
        let src = self.edge_source.forward(&hf); // [N, H], with the bias
        let dst = self
            .edge_target
            .forward(&hf)
            .index_select(0, &masks.flat_neighbours); // [E, H]
        let base = (dst.view([nodes, k, hidden]) + src.unsqueeze(1)).view([edges, hidden]);
        let pair_scalars = match &attr {
            Some(a) => Tensor::cat(&[radial, a], -1),
            None => radial.shallow_clone(),
        }; // [E, 1 + A]
        let pre = self.edge_scalars.forward_onto(&base, &pair_scalars); // [E, H]
        let d_base = dhf.as_ref().map(|dh| {
            let d_dst = self
                .edge_target
                .tangent(dh)
                .index_select(0, &masks.flat_neighbours);
            (d_dst.view([nodes, k, hidden]) + self.edge_source.tangent(dh).unsqueeze(1))
                .view([edges, hidden])
        });
        let d_pair = match (&attr, d_radial, d_attr.as_ref()) {
            (_, None, None) => None,
            (None, dr, _) => dr.map(Tensor::shallow_clone),
            (Some(a), dr, da) => Some(Tensor::cat(
                &[
                    dr.map_or_else(|| radial.zeros_like(), Tensor::shallow_clone),
                    da.map_or_else(|| a.zeros_like(), Tensor::shallow_clone),
                ],
                -1,
            )),
        };
        let d_pre = match (d_base, d_pair) {
            (Some(db), Some(dp)) => Some(self.edge_scalars.tangent_onto(&db, &dp)),
            (db, None) => db,
            (None, Some(dp)) => Some(self.edge_scalars.tangent(&dp)),
        };
        let (a1, d_a1) = silu_jvp(&pre, d_pre);
        let z = self.edge_out.forward(&a1);
        let (mut msg, mut d_msg) = silu_jvp(&z, d_a1.map(|d| self.edge_out.tangent(&d)));
        if let Some(att) = &self.attention {
            let gate = att.forward(&msg).sigmoid();
            d_msg = d_msg.map(|dm| {
                let d_gate = Tensor::sigmoid_backward(&att.tangent(&dm), &gate);
                &dm * &gate + &msg * d_gate
            });
            msg = &msg * &gate;
        }
        let edge_mask = (!masks.all_real).then(|| masks.edge.reshape([edges, 1]));
        if let Some(mask) = &edge_mask {
            msg = msg * mask;
            d_msg = d_msg.map(|dm| dm * mask);
        }

        // Coordinates (eq. 9).
        let z = self.coord_in.forward(&msg);
        let (a, d_a) = silu_jvp(&z, d_msg.as_ref().map(|dm| self.coord_in.tangent(dm)));
        let mut phi = self.coord_out.forward(&a); // [E, 1]
        let mut d_phi = d_a.map(|d| self.coord_out.tangent(&d));
        if let Some(range) = self.coords_range {
            let th = phi.tanh();
            d_phi = d_phi.map(|d| Tensor::tanh_backward(&d, &th) * range);
            phi = th * range;
        }
        if let Some(mask) = &edge_mask {
            phi = phi * mask;
            d_phi = d_phi.map(|d| d * mask);
        }
        let norm = (radial + NORM_EPS).sqrt();
        let denom = &norm + NORM_CONSTANT;
        let scale = phi / &denom;
        // d(phi / denom) = (d_phi - scale * d_denom) / denom, d_denom = d_radial / (2 norm).
        let d_scale = match (d_phi, d_radial) {
            (None, None) => None,
            (dp, dr) => {
                let num = add_tangents(dp, dr.map(|dr| -(&scale * dr) / (&norm * 2.0)));
                num.map(|n| n / &denom)
            }
        };
        let mut shift = over_neighbours(&(diff * &scale)); // [N, n]
        let mut d_shift = add_tangents(d_diff.map(|dd| dd * &scale), d_scale.map(|ds| diff * ds))
            .map(|d| over_neighbours(&d));
        let mut agg = over_neighbours(&msg); // [N, H]
        let mut d_agg = d_msg.map(|dm| over_neighbours(&dm));
        if self.aggregation == Aggregation::Mean {
            let neighbours = masks
                .edge
                .reshape([nodes, k])
                .sum_dim_intlist(&[1i64][..], true, x.kind())
                .clamp_min(1.0); // [N, 1]
            shift = shift / &neighbours;
            agg = agg / &neighbours;
            d_shift = d_shift.map(|d| d / &neighbours);
            d_agg = d_agg.map(|d| d / &neighbours);
        }
        let x_new = x + shift.view([b, m, n]);
        let d_x_new = add_tangents(
            tangents.x.as_ref().map(Tensor::shallow_clone),
            d_shift.map(|d| d.view([b, m, n])),
        );

        // Features (residual).
        let node_input = Tensor::cat(&[&hf, &agg], -1); // [N, 2H]
        let d_node_input = match (dhf.as_ref(), d_agg) {
            (None, None) => None,
            (dh, da) => Some(Tensor::cat(
                &[
                    dh.map_or_else(|| hf.zeros_like(), Tensor::shallow_clone),
                    da.unwrap_or_else(|| agg.zeros_like()),
                ],
                -1,
            )),
        };
        let z = self.node_in.forward(&node_input);
        let (a, d_a) = silu_jvp(&z, d_node_input.map(|d| self.node_in.tangent(&d)));
        let mut h_new = hf + self.node_out.forward(&a); // [N, H]
        let mut d_h_new = add_tangents(dhf, d_a.map(|d| self.node_out.tangent(&d)));
        if !masks.all_real {
            let node = masks.node.reshape([nodes, 1]);
            h_new = h_new * &node;
            d_h_new = d_h_new.map(|d| d * &node);
        }
        let out = Tangents {
            h: d_h_new.map(|d| d.view([b, m, hidden])),
            x: d_x_new,
            edge_attr: tangents.edge_attr.as_ref().map(Tensor::shallow_clone),
        };
        (h_new.view([b, m, hidden]), x_new, out)
    }
}

/// The edge vectors and squared distances of positions in the flat edge layout of [`Masks`]
/// (`[batch * nodes * (nodes - 1), ...]`), with their tangents for forward-mode differentiation:
/// what every convolution computes from its input positions, and what the first may take from a
/// caller that already has it (the E-NF dynamics, whose edge attributes are these squared
/// distances), so it is computed, and differentiated, once.
///
/// Crate-internal: nothing checks that a geometry belongs to the positions it is passed with, so
/// only the crate's own dynamics build one and pass it on.
#[derive(Debug)]
pub(crate) struct EdgeGeometry {
    /// `x_i - x_j`, `[batch * nodes * (nodes - 1), dims]`.
    diff: Tensor,
    /// `||x_i - x_j||^2`, `[batch * nodes * (nodes - 1), 1]`.
    radial: Tensor,
    /// Tangent of `diff` (same shape), `None` where it is zero.
    d_diff: Option<Tensor>,
    /// Tangent of `radial`, `2 (x_i - x_j) . (dx_i - dx_j)` (same shape), `None` where it is zero.
    d_radial: Option<Tensor>,
}

impl EdgeGeometry {
    /// The edge geometry of positions `x [batch, nodes, dims]` fitting `masks`, with the tangent
    /// `dx` (`x`'s shape) or none. Shapes are not checked here: the caller has checked `x`
    /// against `masks` (as [`crate::EgnnDynamics`] does before building one).
    pub(crate) fn new(x: &Tensor, dx: Option<&Tensor>, masks: &Masks) -> Self {
        let size = x.size();
        let rows = |t: &Tensor| t.reshape([size[0] * size[1], size[2]]);
        Self::of_rows(&rows(x), dx.map(rows).as_ref(), masks)
    }

    /// [`EdgeGeometry::new`] from positions already flattened to node rows `[batch * nodes,
    /// dims]`.
    fn of_rows(x: &Tensor, dx: Option<&Tensor>, masks: &Masks) -> Self {
        let diff = flat_edge_differences(x, masks);
        let radial = diff.square().sum_dim_intlist(&[-1i64][..], true, x.kind());
        let d_diff = dx.map(|dx| flat_edge_differences(dx, masks));
        let d_radial = d_diff
            .as_ref()
            .map(|dd| (&diff * dd).sum_dim_intlist(&[-1i64][..], true, x.kind()) * 2.0);
        EdgeGeometry {
            diff,
            radial,
            d_diff,
            d_radial,
        }
    }

    /// The squared distances in the neighbour layout, `[batch, nodes, nodes - 1, 1]` (a view),
    /// as edge attributes; the second item is their tangent.
    pub(crate) fn radial_neighbour_layout(&self, masks: &Masks) -> (Tensor, Option<Tensor>) {
        let (b, m) = (masks.batch_size(), masks.n_nodes());
        let shape = [b, m, (m - 1).max(0), 1];
        (
            self.radial.view(shape),
            self.d_radial.as_ref().map(|d| d.view(shape)),
        )
    }
}

/// Checks the inputs of a graph network: node features `h [batch, nodes, h_nf]`, positions `x
/// [batch, nodes, dims]` fitting `masks`, and edge attributes `[batch, nodes, nodes - 1,
/// edge_attr_nf]` (or none when `edge_attr_nf = 0`).
///
/// Errors: [`EgnnError::Shape`] naming the first input that does not fit.
pub(crate) fn check_graph_inputs(
    h: &Tensor,
    h_nf: i64,
    x: &Tensor,
    edge_attr: Option<&Tensor>,
    edge_attr_nf: i64,
    masks: &Masks,
) -> Result<(), EgnnError> {
    let hs = h.size();
    if hs.len() != 3 || hs[2] != h_nf {
        return Err(EgnnError::Shape {
            what: "node features",
            expected: format!("[batch, nodes, {h_nf}]"),
            got: hs,
        });
    }
    let xs = x.size();
    if xs.len() != 3 || xs[..2] != hs[..2] {
        return Err(EgnnError::Shape {
            what: "positions",
            expected: format!("[{}, {}, dims]", hs[0], hs[1]),
            got: xs,
        });
    }
    masks.check_fits(x)?;
    let expected = [xs[0], xs[1], (xs[1] - 1).max(0), edge_attr_nf];
    match edge_attr {
        None if edge_attr_nf == 0 => Ok(()),
        Some(a) if edge_attr_nf > 0 && a.size() == expected => Ok(()),
        a => Err(EgnnError::Shape {
            what: "edge attributes",
            expected: if edge_attr_nf == 0 {
                "none (the network takes no edge attributes)".into()
            } else {
                format!("{expected:?}")
            },
            got: a.map(Tensor::size).unwrap_or_default(),
        }),
    }
}

/// Directional derivatives (tangents) of a layer's inputs or outputs for forward-mode
/// differentiation, each of the shape of the tensor it belongs to; `None` is a zero tangent.
#[derive(Debug, Default)]
pub struct Tangents {
    /// Tangent of the node features `[batch, nodes, hidden]`.
    pub h: Option<Tensor>,
    /// Tangent of the positions `[batch, nodes, dims]`.
    pub x: Option<Tensor>,
    /// Tangent of the edge attributes `[batch, nodes, nodes - 1, edge_attr_nf]`.
    pub edge_attr: Option<Tensor>,
}

/// The sum of two tangents, `None` being zero.
pub(crate) fn add_tangents(a: Option<Tensor>, b: Option<Tensor>) -> Option<Tensor> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a + b),
        (a, None) => a,
        (None, b) => b,
    }
}

/// SiLU of `z` and its tangent `silu'(z) dz`, `silu'(z) = s (1 + z (1 - s))` with `s =
/// sigmoid(z)`. Outside an autograd graph this is libtorch's fused `silu` and `silu_backward`;
/// inside one (libtorch 2.13 raises "derivative for aten::silu_backward is not implemented" when
/// asked to differentiate the fused one) it is built from five differentiable operations, with
/// `y = silu(z) = z s`: `silu'(z) = s + s (z - y)` (the velocity stays bit-identical to the one
/// without tangents).
pub(crate) fn silu_jvp(z: &Tensor, dz: Option<Tensor>) -> (Tensor, Option<Tensor>) {
    match dz {
        Some(dz) if z.requires_grad() || dz.requires_grad() => {
            let s = z.sigmoid();
            let y = z.silu();
            let slope = s.addcmul(&s, &(z - &y));
            (y, Some(dz * slope))
        }
        Some(dz) => (z.silu(), Some(z.silu_backward(&dz))),
        None => (z.silu(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

    /// A padded batch of three graphs (4, 2 and 3 real nodes of 4) and a layer with attention,
    /// tanh and one edge attribute, all in f64.
    fn padded_case() -> (VarStore, EquivariantConv, Tensor, Tensor, Tensor, Masks) {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let conv = EquivariantConv::new(vs.root(), 5, 1, true, Some(2.0), Aggregation::Sum);
        let mut vs = vs;
        vs.set_kind(Kind::Double);
        tch::no_grad(|| {
            for (_, mut v) in vs.variables() {
                v.copy_(&(Tensor::randn(v.size(), F64) * 0.5));
            }
        });
        let node = Tensor::from_slice(&[1.0, 1., 1., 1., 1., 1., 0., 0., 1., 1., 1., 0.])
            .view([3, 4])
            .to_kind(Kind::Double);
        let masks = Masks::from_node_mask(&node);
        let h = Tensor::randn([3, 4, 5], F64) * node.unsqueeze(-1);
        let x = Tensor::randn([3, 4, 2], F64) * node.unsqueeze(-1);
        let attr = Tensor::randn([3, 4, 3, 1], F64) * &masks.edge;
        (vs, conv, h, x, attr, masks)
    }

    #[test]
    fn a_passed_edge_geometry_gives_what_the_layer_computes_itself() {
        let (_vs, conv, h, x, attr, masks) = padded_case();
        let dx = Tensor::randn([3, 4, 2], F64);
        let tangents = || Tangents {
            h: Some(Tensor::randn([3, 4, 5], F64)),
            x: Some(dx.shallow_clone()),
            edge_attr: None,
        };
        tch::manual_seed(9);
        let t1 = tangents();
        tch::manual_seed(9);
        let t2 = tangents();
        let geometry = EdgeGeometry::new(&x, Some(&dx), &masks);
        let (h1, x1, d1) = conv.forward_jvp(&h, &x, Some(&attr), None, &masks, &t1);
        let (h2, x2, d2) = conv.forward_jvp(&h, &x, Some(&attr), Some(&geometry), &masks, &t2);
        let max = |a: &Tensor, b: &Tensor| f64::try_from((a - b).abs().max()).unwrap();
        assert_eq!(max(&h1, &h2), 0.0);
        assert_eq!(max(&x1, &x2), 0.0);
        assert_eq!(max(d1.h.as_ref().unwrap(), d2.h.as_ref().unwrap()), 0.0);
        assert_eq!(max(d1.x.as_ref().unwrap(), d2.x.as_ref().unwrap()), 0.0);
        // Padded nodes keep zero features and their positions.
        let pad = masks.node.eq(0.0).unsqueeze(-1);
        assert_eq!(
            f64::try_from(h1.masked_select(&pad).abs().sum(Kind::Double)).unwrap(),
            0.0
        );
        assert_eq!(max(&x1.masked_select(&pad), &x.masked_select(&pad)), 0.0);
    }

    #[test]
    fn inputs_that_do_not_fit_are_typed_errors() {
        let (_vs, conv, h, x, attr, masks) = padded_case();
        assert!(conv.forward(&h, &x, Some(&attr), &masks).is_ok());
        let other_batch = Masks::full(2, 4, Kind::Double, Device::Cpu);
        let wrong_attr = Tensor::zeros([3, 4, 4, 1], F64);
        let cases = [
            conv.forward(&h, &x, Some(&attr), &other_batch),
            conv.forward(&h, &x, Some(&wrong_attr), &masks),
            conv.forward(&h, &x, None, &masks),
            conv.forward(&h.narrow(2, 0, 4), &x, Some(&attr), &masks),
            conv.forward(&h, &x.narrow(1, 0, 3), Some(&attr), &masks),
        ];
        for result in cases {
            assert!(matches!(result, Err(EgnnError::Shape { .. })), "{result:?}");
        }
    }
}
