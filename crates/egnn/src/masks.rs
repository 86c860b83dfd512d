//! Node and edge masks of a padded batch of fully connected graphs.

use tch::{Device, Kind, Tensor};

/// Masks of a batch, computed once per batch and shared by every evaluation of the dynamics.
#[derive(Debug)]
pub struct Masks {
    /// `[batch, nodes]`, 1 for a real node, 0 for padding.
    pub node: Tensor,
    /// `[batch, nodes, nodes, 1]`, 1 for an edge i != j between two real nodes.
    pub edge: Tensor,
    /// Whether every node is real (lets callers skip masking work).
    pub all_real: bool,
}

impl Masks {
    /// Masks of `batch` graphs that all have `nodes` real nodes.
    pub fn full(batch: i64, nodes: i64, kind: Kind, device: Device) -> Self {
        Self::from_node_mask(&Tensor::ones([batch, nodes], (kind, device)))
    }

    /// Masks from a node mask `[batch, nodes]` (any float kind; it is kept in that kind).
    pub fn from_node_mask(node_mask: &Tensor) -> Self {
        let all_real = node_mask.min().double_value(&[]) > 0.5;
        Masks {
            node: node_mask.shallow_clone(),
            edge: geometry::edge_mask(node_mask).unsqueeze(-1),
            all_real,
        }
    }

    /// Number of graphs.
    pub fn batch_size(&self) -> i64 {
        self.node.size()[0]
    }

    /// Nodes per graph, padding included.
    pub fn n_nodes(&self) -> i64 {
        self.node.size()[1]
    }

    /// The masks repeated `k` times along the batch (graph `b` of copy `c` is row `c * batch + b`),
    /// as the batched exact trace needs.
    pub fn repeat(&self, k: i64) -> Self {
        Masks {
            node: self.node.repeat([k, 1]),
            edge: self.edge.repeat([k, 1, 1, 1]),
            all_real: self.all_real,
        }
    }

    /// The masks in another float kind.
    pub fn to_kind(&self, kind: Kind) -> Self {
        Masks { node: self.node.to_kind(kind), edge: self.edge.to_kind(kind), all_real: self.all_real }
    }
}
