//! Pairwise geometry of the fully connected graph, as dense `[batch, nodes, nodes, ...]` tensors.

use tch::Tensor;

/// Pairwise differences `x_i - x_j`: `x [batch, nodes, dims]` -> `[batch, nodes, nodes, dims]`
/// (entry `[b, i, j]` is `x[b, i] - x[b, j]`).
pub fn pairwise_differences(x: &Tensor) -> Tensor {
    x.unsqueeze(2) - x.unsqueeze(1)
}

/// Squared pairwise distances `||x_i - x_j||^2`: `x [batch, nodes, dims]` -> `[batch, nodes, nodes]`.
pub fn pairwise_sq_distances(x: &Tensor) -> Tensor {
    pairwise_differences(x)
        .square()
        .sum_dim_intlist(&[-1i64][..], false, x.kind())
}

/// Edge mask of the fully connected graph without self-loops over the real nodes:
/// `node_mask [batch, nodes]` -> `[batch, nodes, nodes]`, 1 where `i != j` and both are real.
pub fn edge_mask(node_mask: &Tensor) -> Tensor {
    let n = node_mask.size()[1];
    let outer = node_mask.unsqueeze(2) * node_mask.unsqueeze(1);
    let eye = Tensor::eye(n, (node_mask.kind(), node_mask.device()));
    outer * (1.0 - eye)
}
