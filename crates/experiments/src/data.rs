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

    /// Every graph rotated by its own random rotation (Haar on SO(n),
    /// [`geometry::random_rotation_batch`]) about the origin, positions as row vectors:
    /// `x Q_b^T`. Centred positions stay centred. The GNF-att-aug training augmentation
    /// (rotations only, as the reference's).
    pub fn randomly_rotated(&self, rng: &mut impl rand::Rng) -> TensorBatch {
        TensorBatch {
            positions: rotate_rows(&self.positions, rng),
            masks: Masks::from_node_mask(&self.masks.node),
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

/// Positions `x [batch, nodes, n]` (a rank-3 tensor: callers pass a batch's positions) with each graph rotated by its own random rotation about the
/// origin (Haar on SO(n), [`geometry::random_rotation_batch`]): `x_b Q_b^T`, in `x`'s kind and
/// device. Zero rows (padding) stay zero; centred graphs stay centred.
pub(crate) fn rotate_rows(x: &Tensor, rng: &mut impl rand::Rng) -> Tensor {
    let size = x.size();
    let q = geometry::random_rotation_batch(size[0], size[2], rng)
        .to_kind(x.kind())
        .to_device(x.device());
    x.matmul(&q.transpose(-2, -1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn random_rotations_keep_distances_and_centring_and_differ_per_graph() {
        let _rng = geometry::testing::seeded(3);
        let x =
            geometry::centre(&Tensor::randn([5, 4, 2], (Kind::Double, Device::Cpu)), None).unwrap();
        let batch = TensorBatch {
            masks: Masks::full(5, 4, Kind::Double, Device::Cpu),
            positions: x.shallow_clone(),
        };
        let draw = |seed| batch.randomly_rotated(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let rotated = draw(1);
        let distances = |t: &Tensor| geometry::pairwise_sq_distances(t);
        let err = (distances(&rotated.positions) - distances(&x))
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 1e-12, "pairwise distances changed by {err}");
        assert!(geometry::centre::max_centre_of_mass(&rotated.positions, None).unwrap() < 1e-12);
        // Rotations, not reflections: the signed area of every triangle keeps its sign (2D).
        let signed_area = |t: &Tensor| {
            let a = t.select(1, 1) - t.select(1, 0);
            let b = t.select(1, 2) - t.select(1, 0);
            a.select(1, 0) * b.select(1, 1) - a.select(1, 1) * b.select(1, 0)
        };
        let ratio = signed_area(&rotated.positions) / signed_area(&x);
        assert!(
            (&ratio - 1.0).abs().max().double_value(&[]) < 1e-9,
            "{ratio:?}"
        );
        // Every graph is moved (a draw of the identity has probability zero).
        let moved = (&rotated.positions - &x).abs().amax(&[1i64, 2][..], false);
        assert!(moved.min().double_value(&[]) > 1e-3, "{moved:?}");
        // The same generator state gives the same rotations (resumed runs rely on it).
        assert!(draw(1).positions.equal(&rotated.positions));
        assert!(!draw(2).positions.equal(&rotated.positions));
    }
}
