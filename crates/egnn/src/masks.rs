//! Node and edge masks of a padded batch of fully connected graphs.

use tch::{Device, Kind, Tensor};

/// Masks of a batch, computed once per batch and shared by every evaluation of the dynamics.
///
/// Edges use the *neighbour layout*: the M - 1 neighbours j != i of node i, in increasing order,
/// so edge tensors are `[batch, nodes, nodes - 1, ...]` and hold no self-loops (for DW4 that is 12
/// edges per graph instead of 16). Summing over axis 2 aggregates over a node's neighbours.
#[derive(Debug)]
pub struct Masks {
    /// `[batch, nodes]`, 1 for a real node, 0 for padding.
    pub node: Tensor,
    /// `[batch, nodes, nodes - 1, 1]` in the neighbour layout: 1 where both ends are real.
    pub edge: Tensor,
    /// `[nodes * (nodes - 1)]` (int64): the neighbour j of each edge, node-major.
    pub neighbours: Tensor,
    /// `[batch * nodes * (nodes - 1)]` (int64): the same neighbours as rows of the batch's nodes
    /// flattened to `[batch * nodes, ...]` (`b * nodes + j` for edge (i, j) of graph b), for the
    /// *flat edge layout* `[batch * nodes * (nodes - 1), ...]` in which every layer of a message
    /// network is a single matrix product ([`flat_edge_differences`]).
    pub flat_neighbours: Tensor,
    /// Whether every node is real (lets callers skip masking work).
    pub all_real: bool,
}

/// The neighbour index of the neighbour layout: for i in 0..m, the j in 0..m with j != i.
pub fn neighbour_index(m: i64, device: Device) -> Tensor {
    let idx: Vec<i64> = (0..m)
        .flat_map(|i| (0..m).filter(move |&j| j != i))
        .collect();
    Tensor::from_slice(&idx).to_device(device)
}

/// Gathers per-node values `[batch, nodes, f]` into the neighbour layout `[batch, nodes, nodes -
/// 1, f]`: entry `[b, i, k]` is the value of the k-th neighbour of i.
pub fn gather_neighbours(values: &Tensor, neighbours: &Tensor) -> Tensor {
    let s = values.size();
    values
        .index_select(1, neighbours)
        .view([s[0], s[1], (s[1] - 1).max(0), s[2]])
}

/// Differences `x_i - x_j` over the neighbour layout: `x [batch, nodes, dims]` ->
/// `[batch, nodes, nodes - 1, dims]`.
pub fn neighbour_differences(x: &Tensor, neighbours: &Tensor) -> Tensor {
    x.unsqueeze(2) - gather_neighbours(x, neighbours)
}

/// The neighbour index of the flat edge layout for `batch` graphs (see [`Masks::flat_neighbours`]).
fn flat_neighbour_index(neighbours: &Tensor, batch: i64, nodes: i64) -> Tensor {
    let offsets = Tensor::arange(batch, (Kind::Int64, neighbours.device())) * nodes;
    (offsets.unsqueeze(1) + neighbours.unsqueeze(0)).flatten(0, -1)
}

/// Differences `x_i - x_j` in the flat edge layout: node values `x [batch * nodes, f]` (graph-major
/// rows, as `x.reshape([batch * nodes, f])` of `[batch, nodes, f]`) -> `[batch * nodes * (nodes -
/// 1), f]`, row `(b * nodes + i) * (nodes - 1) + k` for the k-th neighbour j of node i: the rows of
/// [`neighbour_differences`] flattened.
pub fn flat_edge_differences(x: &Tensor, masks: &Masks) -> Tensor {
    let (rows, f) = (x.size()[0], x.size()[1]);
    let k = (masks.n_nodes() - 1).max(0);
    let xj = x.index_select(0, &masks.flat_neighbours).view([rows, k, f]);
    (x.unsqueeze(1) - xj).view([rows * k, f])
}

/// Squared distances `||x_i - x_j||^2` over the neighbour layout: `[batch, nodes, nodes - 1, 1]`.
pub fn neighbour_sq_distances(x: &Tensor, neighbours: &Tensor) -> Tensor {
    neighbour_differences(x, neighbours)
        .square()
        .sum_dim_intlist(&[-1i64][..], true, x.kind())
}

impl Masks {
    /// Masks of `batch` graphs that all have `nodes` real nodes.
    pub fn full(batch: i64, nodes: i64, kind: Kind, device: Device) -> Self {
        Self::from_node_mask(&Tensor::ones([batch, nodes], (kind, device)))
    }

    /// Masks from a node mask `[batch, nodes]` (any float kind; it is kept in that kind).
    pub fn from_node_mask(node_mask: &Tensor) -> Self {
        let all_real = node_mask.numel() == 0 || node_mask.min().double_value(&[]) > 0.5;
        let neighbours = neighbour_index(node_mask.size()[1], node_mask.device());
        let node = node_mask.shallow_clone();
        let edge =
            node.unsqueeze(2).unsqueeze(3) * gather_neighbours(&node.unsqueeze(-1), &neighbours);
        let size = node.size();
        let flat_neighbours = flat_neighbour_index(&neighbours, size[0], size[1]);
        Masks {
            node,
            edge,
            neighbours,
            flat_neighbours,
            all_real,
        }
    }

    /// Checks that these masks fit positions (or features) `t [batch, nodes, ...]`.
    ///
    /// Errors: [`crate::EgnnError::Shape`] naming both shapes.
    pub fn check_fits(&self, t: &Tensor) -> Result<(), crate::EgnnError> {
        let (size, node) = (t.size(), self.node.size());
        if size.len() < 2 || size[..2] != node[..] {
            return Err(crate::EgnnError::Shape {
                what: "positions for these masks",
                expected: format!("[{}, {}, ...] (the node mask's shape)", node[0], node[1]),
                got: size,
            });
        }
        Ok(())
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
        let node = self.node.repeat([k, 1]);
        let size = node.size();
        Masks {
            flat_neighbours: flat_neighbour_index(&self.neighbours, size[0], size[1]),
            node,
            edge: self.edge.repeat([k, 1, 1, 1]),
            neighbours: self.neighbours.shallow_clone(),
            all_real: self.all_real,
        }
    }

    /// The masks in another float kind.
    pub fn to_kind(&self, kind: Kind) -> Self {
        Masks {
            node: self.node.to_kind(kind),
            edge: self.edge.to_kind(kind),
            neighbours: self.neighbours.shallow_clone(),
            flat_neighbours: self.flat_neighbours.shallow_clone(),
            all_real: self.all_real,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbour_layout_lists_every_other_node() {
        let idx: Vec<i64> = neighbour_index(3, Device::Cpu).try_into().unwrap();
        assert_eq!(idx, vec![1, 2, 0, 2, 0, 1]);
        let mask = Tensor::from_slice(&[1.0f64, 1.0, 0.0]).view([1, 3]);
        let m = Masks::from_node_mask(&mask);
        let edge: Vec<f64> = m.edge.flatten(0, -1).try_into().unwrap();
        // Edges 0-1, 0-2, 1-0, 1-2, 2-0, 2-1: only 0-1 and 1-0 join two real nodes.
        assert_eq!(edge, vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0]);
        assert!(!m.all_real);
    }

    #[test]
    fn flat_edge_differences_are_the_neighbour_layout_flattened() {
        let x = Tensor::randn([2, 4, 3], (Kind::Double, Device::Cpu));
        let masks = Masks::full(2, 4, Kind::Double, Device::Cpu);
        let flat = flat_edge_differences(&x.reshape([8, 3]), &masks);
        let dense = neighbour_differences(&x, &masks.neighbours).reshape([24, 3]);
        assert_eq!(flat.size(), vec![24, 3]);
        assert_eq!(f64::try_from((flat - dense).abs().max()).unwrap(), 0.0);
        // Copies of a repeated batch index their own rows.
        let rep = masks.repeat(3);
        let x3 = x.repeat([3, 1, 1]);
        let flat3 = flat_edge_differences(&x3.reshape([24, 3]), &rep);
        let dense3 = neighbour_differences(&x3, &rep.neighbours).reshape([72, 3]);
        assert_eq!(f64::try_from((flat3 - dense3).abs().max()).unwrap(), 0.0);
    }
}
