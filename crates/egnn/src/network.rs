//! The EGNN: a feature embedding, `n_layers` equivariant convolutions, and an output embedding.

use crate::config::EgnnConfig;
use crate::conv::{check_graph_inputs, EdgeGeometry, EquivariantConv, Tangents};
use crate::error::EgnnError;
use crate::linear::Linear;
use crate::masks::Masks;
use tch::nn::{self, Module};
use tch::Tensor;

/// What [`Egnn::forward_jvp`] returns: the outputs and their tangents.
#[derive(Debug)]
pub struct JvpOutput {
    /// Output features `[batch, nodes, out_node_nf]`, zero at padded nodes.
    pub h: Tensor,
    /// Output positions `[batch, nodes, dims]`.
    pub x: Tensor,
    /// Tangent of `h` (same shape), `None` where it is zero.
    pub dh: Option<Tensor>,
    /// Tangent of `x` (same shape), `None` where it is zero.
    pub dx: Option<Tensor>,
}

/// An EGNN mapping node features `[batch, nodes, in_node_nf]` and positions `[batch, nodes, dims]` to
/// features `[batch, nodes, out_node_nf]` and updated positions.
///
/// Parameters under `path`: `embedding_in`, `layers.<l>` (see [`EquivariantConv`]), `embedding_out`.
#[derive(Debug)]
pub struct Egnn {
    embedding_in: Linear,
    layers: Vec<EquivariantConv>,
    embedding_out: Linear,
    in_node_nf: i64,
    edge_attr_nf: i64,
}

impl Egnn {
    /// Builds the network; `edge_attr_nf` extra attributes are fed to every layer's messages.
    ///
    /// Errors: [`EgnnError::Config`] for out-of-range hyper-parameters.
    pub fn new(
        path: nn::Path,
        config: &EgnnConfig,
        in_node_nf: i64,
        out_node_nf: i64,
        edge_attr_nf: i64,
    ) -> Result<Self, EgnnError> {
        config.validate()?;
        let range = config
            .tanh
            .then(|| config.coords_range / config.n_layers as f64);
        let layers = (0..config.n_layers)
            .map(|l| {
                EquivariantConv::new(
                    &path / "layers" / l,
                    config.hidden_nf,
                    edge_attr_nf,
                    config.attention,
                    range,
                    config.aggregation,
                )
            })
            .collect();
        Ok(Egnn {
            embedding_in: Linear::new(&path / "embedding_in", in_node_nf, config.hidden_nf),
            layers,
            embedding_out: Linear::new(&path / "embedding_out", config.hidden_nf, out_node_nf),
            in_node_nf,
            edge_attr_nf,
        })
    }

    /// Runs the network. `h [batch, nodes, in_node_nf]`, `x [batch, nodes, dims]`, `edge_attr
    /// [batch, nodes, nodes - 1, edge_attr_nf]` (neighbour layout of [`Masks`]) or `None` for a
    /// network built with `edge_attr_nf = 0`.
    ///
    /// Returns `(h_out [batch, nodes, out_node_nf], x_out [batch, nodes, dims])`; padded nodes have
    /// zero output features.
    ///
    /// Errors: [`EgnnError::Shape`] if `h`'s last dimension is not `in_node_nf`, ranks are wrong,
    /// `x` does not fit `masks` or the edge attributes do not fit the graph or the network.
    pub fn forward(
        &self,
        h: &Tensor,
        x: &Tensor,
        edge_attr: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<(Tensor, Tensor), EgnnError> {
        let out = self.forward_jvp(h, x, edge_attr, masks, &Tangents::default())?;
        Ok((out.h, out.x))
    }

    /// [`Egnn::forward`] with forward-mode differentiation: also returns the directional
    /// derivative of `(h_out, x_out)` along `tangents` of the inputs (`h` `[batch, nodes,
    /// in_node_nf]`, `x`, `edge_attr`, shaped as they are; `None` is a zero tangent), computed
    /// layer by layer beside the forward pass ([`EquivariantConv::forward_jvp`]).
    ///
    /// Returns the outputs and their tangents ([`JvpOutput`]).
    ///
    /// Errors: as [`Egnn::forward`]; [`EgnnError::Shape`] for a tangent shaped unlike its input.
    pub fn forward_jvp(
        &self,
        h: &Tensor,
        x: &Tensor,
        edge_attr: Option<&Tensor>,
        masks: &Masks,
        tangents: &Tangents,
    ) -> Result<JvpOutput, EgnnError> {
        self.forward_jvp_with_geometry(h, x, edge_attr, None, masks, tangents)
    }

    /// [`Egnn::forward_jvp`] whose first layer takes the edge geometry of `x` (with the tangent
    /// `tangents.x`) from the caller instead of computing it again: the E-NF dynamics compute it
    /// for the edge attributes. Not checked against `x` (see [`EdgeGeometry`]).
    // `h = h * mask` on purpose: `*=` would be libtorch's in-place op inside an autograd graph.
    #[allow(clippy::assign_op_pattern)]
    pub(crate) fn forward_jvp_with_geometry(
        &self,
        h: &Tensor,
        x: &Tensor,
        edge_attr: Option<&Tensor>,
        geometry: Option<&EdgeGeometry>,
        masks: &Masks,
        tangents: &Tangents,
    ) -> Result<JvpOutput, EgnnError> {
        check_graph_inputs(h, self.in_node_nf, x, edge_attr, self.edge_attr_nf, masks)?;
        let pairs = [
            ("node feature tangent", tangents.h.as_ref(), Some(h)),
            ("position tangent", tangents.x.as_ref(), Some(x)),
            (
                "edge attribute tangent",
                tangents.edge_attr.as_ref(),
                edge_attr,
            ),
        ];
        for (what, tangent, input) in pairs {
            if let Some(t) = tangent {
                let expected = input.map(Tensor::size);
                if expected.as_ref() != Some(&t.size()) {
                    return Err(EgnnError::Shape {
                        what,
                        expected: format!("{expected:?} (its input's shape)"),
                        got: t.size(),
                    });
                }
            }
        }
        let mut h = self.embedding_in.forward(h);
        let mut tan = Tangents {
            h: tangents.h.as_ref().map(|dh| self.embedding_in.tangent(dh)),
            x: tangents.x.as_ref().map(Tensor::shallow_clone),
            edge_attr: tangents.edge_attr.as_ref().map(Tensor::shallow_clone),
        };
        let mut x = x.shallow_clone();
        for (l, layer) in self.layers.iter().enumerate() {
            let geometry = geometry.filter(|_| l == 0);
            let (h_new, x_new, tan_new) =
                layer.forward_jvp(&h, &x, edge_attr, geometry, masks, &tan);
            h = h_new;
            x = x_new;
            tan = tan_new;
        }
        let mut h = self.embedding_out.forward(&h);
        let mut dh = tan.h.map(|dh| self.embedding_out.tangent(&dh));
        if !masks.all_real {
            let node = masks.node.unsqueeze(-1);
            h = h * &node;
            dh = dh.map(|d| d * &node);
        }
        Ok(JvpOutput {
            h,
            x,
            dh,
            dx: tan.x,
        })
    }
}
