//! The boundary between the datasets crate (plain arrays) and libtorch tensors.

use datasets::Batch;
use egnn::Masks;
use tch::{Device, Kind, Tensor};

/// A batch as tensors: positions `[B, M, n]` (centred) and its masks, in `kind` on `device`.
#[derive(Debug)]
pub struct TensorBatch {
    /// Centred positions `[batch, nodes, dims]`.
    pub positions: Tensor,
    /// Node and edge masks.
    pub masks: Masks,
}

impl TensorBatch {
    /// Converts a [`Batch`] of float32 arrays.
    pub fn from_batch(batch: &Batch, kind: Kind, device: Device) -> Self {
        let (b, m, n) = (
            batch.batch_size as i64,
            batch.n_particles as i64,
            batch.n_dims as i64,
        );
        let positions = Tensor::from_slice(&batch.positions)
            .view([b, m, n])
            .to_kind(kind)
            .to_device(device);
        let node_mask = Tensor::from_slice(&batch.node_mask)
            .view([b, m])
            .to_kind(kind)
            .to_device(device);
        TensorBatch {
            positions,
            masks: Masks::from_node_mask(&node_mask),
        }
    }

    /// Rows `start .. start + len` of the batch.
    pub fn slice(&self, start: i64, len: i64) -> TensorBatch {
        TensorBatch {
            positions: self.positions.narrow(0, start, len),
            masks: Masks::from_node_mask(&self.masks.node.narrow(0, start, len)),
        }
    }

    /// Number of graphs.
    pub fn len(&self) -> i64 {
        self.positions.size()[0]
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
