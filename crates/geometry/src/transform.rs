//! Elements of E(n) x S_M: orthogonal maps (rotations and reflections), translations and node
//! permutations, acting on batched positions, vectors, features and masks.

use crate::error::{expect_rank, GeometryError};
use rand::Rng;
use rand_distr::StandardNormal;
use tch::{Device, Kind, Tensor};

/// A random orthogonal matrix drawn uniformly (Haar measure) from O(n), reflections included:
/// the Q of the QR decomposition of a standard Gaussian matrix, with the columns' signs fixed by
/// the signs of R's diagonal (Mezzadri 2007, "How to generate random matrices from the classical
/// compact groups", section 5). Half of the draws have determinant -1.
///
/// Returns `[n, n]` f64 on the CPU. Deterministic for a given `rng` state.
pub fn random_orthogonal(n: i64, rng: &mut impl Rng) -> Tensor {
    random_orthogonal_batch(1, n, rng).squeeze_dim(0)
}

/// `batch` independent Haar-distributed orthogonal matrices (see [`random_orthogonal`]) from one
/// batched QR decomposition: `[batch, n, n]` f64 on the CPU. Matrix `b` uses the `n * n` normal
/// draws after those of matrices `0..b`, so `random_orthogonal_batch(1, ..)` equals
/// [`random_orthogonal`] for the same `rng` state.
pub fn random_orthogonal_batch(batch: i64, n: i64, rng: &mut impl Rng) -> Tensor {
    let entries: Vec<f64> = (0..batch * n * n)
        .map(|_| rng.sample(StandardNormal))
        .collect();
    let a = Tensor::from_slice(&entries).view([batch, n, n]);
    let (q, r) = Tensor::linalg_qr(&a, "reduced");
    // [batch, n]; a zero diagonal entry has probability zero: keep its column as it is.
    let signs = r.diagonal(0, -2, -1).sign();
    let signs = signs.where_self(&signs.ne(0.0), &signs.ones_like());
    q * signs.unsqueeze(-2)
}

/// `batch` independent random rotations drawn uniformly (Haar measure) from SO(n): the matrices
/// of [`random_orthogonal_batch`] (same draws from `rng`) with the first column negated where the
/// determinant is -1 (negating one column of a Haar-distributed reflection gives a
/// Haar-distributed rotation). Returns `[batch, n, n]` f64 on the CPU, every determinant +1.
/// The GNF-att-aug training augmentation rotates each graph's positions (rows) by `x Q_b^T`.
pub fn random_rotation_batch(batch: i64, n: i64, rng: &mut impl Rng) -> Tensor {
    if n < 1 {
        // No dimensions: nothing to rotate (and nothing drawn).
        return Tensor::zeros([batch.max(0), 0, 0], (Kind::Double, Device::Cpu));
    }
    let q = random_orthogonal_batch(batch, n, rng);
    // Column signs [det, 1, ..., 1]: negating the first column of a reflection rotates.
    let det_sign = Tensor::linalg_det(&q).sign(); // [batch], +-1
    let flip = Tensor::cat(
        &[
            det_sign.view([batch, 1, 1]),
            Tensor::ones([batch, 1, n - 1], (Kind::Double, Device::Cpu)),
        ],
        2,
    );
    q * flip
}

/// A random translation with independent N(0, scale^2) components: `[n]` f64 on the CPU.
pub fn random_translation(n: i64, scale: f64, rng: &mut impl Rng) -> Tensor {
    let entries: Vec<f64> = (0..n)
        .map(|_| scale * rng.sample::<f64, _>(StandardNormal))
        .collect();
    Tensor::from_slice(&entries)
}

/// A uniformly random permutation of `0..n` (Fisher-Yates).
pub fn random_permutation(n: i64, rng: &mut impl Rng) -> Vec<i64> {
    let mut perm: Vec<i64> = (0..n).collect();
    for i in (1..n as usize).rev() {
        let j = rng.random_range(0..=i);
        perm.swap(i, j);
    }
    perm
}

/// One element g = (Q, t, pi) of E(n) x S_M. Acting on positions: node `k` of the result is
/// `Q x[pi[k]] + t` (row vectors: `x Q^T + t`). Vectors (velocities) are rotated and permuted but not
/// translated; node features and masks are only permuted; per-graph scalars are unchanged.
#[derive(Debug)]
pub struct Transform {
    /// Orthogonal matrix Q, `[dims, dims]`, f64 on the CPU.
    pub rotation: Tensor,
    /// Translation t, `[dims]`, f64 on the CPU.
    pub translation: Tensor,
    /// Node permutation pi: node `k` of the result is node `pi[k]` of the input.
    pub permutation: Vec<i64>,
}

impl Transform {
    /// The identity on `n_nodes` nodes in `n_dims` dimensions.
    pub fn identity(n_nodes: i64, n_dims: i64) -> Self {
        Transform {
            rotation: Tensor::eye(n_dims, (Kind::Double, Device::Cpu)),
            translation: Tensor::zeros([n_dims], (Kind::Double, Device::Cpu)),
            permutation: (0..n_nodes).collect(),
        }
    }

    /// A random element: Haar orthogonal Q (reflections included), t ~ N(0, translation_scale^2)
    /// per component, uniform permutation.
    pub fn random(n_nodes: i64, n_dims: i64, translation_scale: f64, rng: &mut impl Rng) -> Self {
        Transform {
            rotation: random_orthogonal(n_dims, rng),
            translation: random_translation(n_dims, translation_scale, rng),
            permutation: random_permutation(n_nodes, rng),
        }
    }

    /// Determinant of Q: +1 for a rotation, -1 for a reflection.
    pub fn determinant(&self) -> f64 {
        Tensor::linalg_det(&self.rotation).double_value(&[])
    }

    fn permute(&self, t: &Tensor) -> Tensor {
        let index = Tensor::from_slice(&self.permutation).to_device(t.device());
        t.index_select(1, &index)
    }

    fn rotate(&self, v: &Tensor) -> Result<Tensor, GeometryError> {
        expect_rank(v, 3, "vectors", "[batch, nodes, dims]")?;
        let q = self.rotation.to_kind(v.kind()).to_device(v.device());
        Ok(v.matmul(&q.tr()))
    }

    /// Acts on a node mask `[batch, nodes]`: permutes the nodes.
    pub fn act_on_mask(&self, node_mask: &Tensor) -> Tensor {
        self.permute(node_mask)
    }

    /// Acts on node features `[batch, nodes, nf]`: permutes the nodes.
    pub fn act_on_features(&self, h: &Tensor) -> Tensor {
        self.permute(h)
    }

    /// Acts on vectors attached to nodes (velocities) `[batch, nodes, dims]`: `v Q^T`, permuted.
    ///
    /// Errors: [`GeometryError::Shape`] if `v` is not rank 3.
    pub fn act_on_vectors(&self, v: &Tensor) -> Result<Tensor, GeometryError> {
        Ok(self.permute(&self.rotate(v)?))
    }

    /// Acts on positions `[batch, nodes, dims]`: `x Q^T + t` on the real nodes, permuted; padded
    /// nodes (mask 0) stay exactly zero.
    ///
    /// Errors: [`GeometryError::Shape`] if `x` is not rank 3.
    pub fn act_on_positions(
        &self,
        x: &Tensor,
        node_mask: Option<&Tensor>,
    ) -> Result<Tensor, GeometryError> {
        let t = self
            .translation
            .to_kind(x.kind())
            .to_device(x.device())
            .view([1, 1, -1]);
        let moved = self.rotate(x)? + t;
        let moved = match node_mask {
            Some(mask) => moved * mask.unsqueeze(-1).to_kind(x.kind()),
            None => moved,
        };
        Ok(self.permute(&moved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    /// Largest entry of |Q Q^T - I| over a batch of matrices `[batch, n, n]`.
    fn orthogonality_error(q: &Tensor) -> f64 {
        let n = q.size()[2];
        let eye = Tensor::eye(n, (Kind::Double, Device::Cpu));
        (q.matmul(&q.transpose(-2, -1)) - eye)
            .abs()
            .max()
            .double_value(&[])
    }

    #[test]
    fn random_rotations_are_proper_orthogonal_and_reuse_the_haar_draws() {
        for n in [2, 3] {
            let q = random_rotation_batch(64, n, &mut StdRng::seed_from_u64(8));
            let err = orthogonality_error(&q);
            assert!(err < 1e-12, "Q Q^T - I = {err}");
            let det = Tensor::linalg_det(&q);
            assert!((det - 1.0).abs().max().double_value(&[]) < 1e-12);
            // Column by column the Haar draw of the same generator state, the first column
            // negated exactly where that draw was a reflection.
            let o = random_orthogonal_batch(64, n, &mut StdRng::seed_from_u64(8));
            let same = (q.narrow(2, 1, n - 1) - o.narrow(2, 1, n - 1)).abs().max();
            assert_eq!(same.double_value(&[]), 0.0);
            let flipped = Tensor::linalg_det(&o).lt(0.0);
            assert!(
                flipped.any().int64_value(&[]) == 1,
                "some draws are reflections"
            );
        }
        assert_eq!(
            random_rotation_batch(3, 0, &mut StdRng::seed_from_u64(1)).size(),
            [3, 0, 0]
        );
    }

    #[test]
    fn haar_matrices_are_orthogonal_and_include_reflections() {
        let mut rng = StdRng::seed_from_u64(7);
        let q = random_orthogonal_batch(64, 3, &mut rng);
        let err = orthogonality_error(&q);
        assert!(err < 1e-12, "Q Q^T - I = {err}");
        let det = Tensor::linalg_det(&q);
        let off = (det.abs() - 1.0).abs().max().double_value(&[]);
        assert!(off < 1e-12, "|det| - 1 = {off}");
        let reflections = det.lt(0.0).sum(Kind::Int64).int64_value(&[]);
        // Binomial(64, 1/2): P(outside 16..=48) < 1e-4.
        assert!(
            (16..=48).contains(&reflections),
            "{reflections} reflections in 64 draws"
        );
        // One matrix alone is the first of a batch drawn from the same state.
        let single = random_orthogonal(3, &mut StdRng::seed_from_u64(7));
        assert!((single - q.get(0)).abs().max().double_value(&[]) < 1e-15);
    }

    #[test]
    fn permutations_are_bijections() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut p = random_permutation(13, &mut rng);
        p.sort();
        assert_eq!(p, (0..13).collect::<Vec<_>>());
    }
}
