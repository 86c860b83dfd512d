//! Mini-batches of centred particle positions.
//!
//! Positions are centred per sample (the mean over particles subtracted, per coordinate, in
//! float64, then stored as float32): the E-NF flow lives on the zero-centre-of-mass subspace
//! (Satorras et al. 2021, section 3.2; `FACTS.md` section 2).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{DatasetError, Result};
use crate::particles::ParticleDataset;
use crate::splits::SplitName;

/// A batch of `batch_size` samples of `n_particles` particles in `n_dims` dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Centred positions, float32, shape `[B, M, n]` row-major: for every sample
    /// `Σ_i x[b, i, k] = 0` up to float32 rounding.
    pub positions: Vec<f32>,
    /// Node mask, float32, shape `[B, M]`: 1 for a real particle, 0 for padding (all ones for
    /// particle systems, which have no padding).
    pub node_mask: Vec<f32>,
    /// Number of samples B.
    pub batch_size: usize,
    /// Number of particles M.
    pub n_particles: usize,
    /// Spatial dimension n.
    pub n_dims: usize,
}

impl Batch {
    /// Gathers the samples `indices` (in that order, repeats allowed) of `dataset` and centres
    /// them. An empty `indices` gives an empty batch.
    ///
    /// # Errors
    /// [`DatasetError::IndexOutOfRange`] for the first index `≥ dataset.len()`.
    pub fn gather(dataset: &ParticleDataset, indices: &[usize]) -> Result<Self> {
        let n_samples = dataset.len();
        if let Some(&index) = indices.iter().find(|&&i| i >= n_samples) {
            return Err(DatasetError::IndexOutOfRange { index, n_samples });
        }
        Ok(Self::gather_unchecked(dataset, indices))
    }

    /// [`Batch::gather`] for indices already checked to be in range.
    fn gather_unchecked(dataset: &ParticleDataset, indices: &[usize]) -> Self {
        let (m, n) = (dataset.n_particles, dataset.n_dims);
        let per = m * n;
        let mut positions = Vec::with_capacity(indices.len() * per);
        let mut mean = vec![0f64; n];
        for &i in indices {
            let x = &dataset.positions[i * per..(i + 1) * per];
            mean.iter_mut().for_each(|v| *v = 0.0);
            for p in x.chunks_exact(n) {
                for (acc, v) in mean.iter_mut().zip(p) {
                    *acc += *v as f64;
                }
            }
            mean.iter_mut().for_each(|v| *v /= m as f64);
            for p in x.chunks_exact(n) {
                for (v, c) in p.iter().zip(&mean) {
                    positions.push((*v as f64 - c) as f32);
                }
            }
        }
        Self {
            positions,
            node_mask: vec![1.0; indices.len() * m],
            batch_size: indices.len(),
            n_particles: m,
            n_dims: n,
        }
    }
}

impl ParticleDataset {
    /// The whole split `name` as one centred [`Batch`], in split order.
    ///
    /// # Errors
    /// [`DatasetError::IndexOutOfRange`] when the split holds an index `≥ N` (impossible for a
    /// data set that passed [`ParticleDataset::validate`]).
    pub fn split_batch(&self, name: SplitName) -> Result<Batch> {
        Batch::gather(self, self.splits.get(name))
    }
}

/// Seeded mini-batch schedule over a fixed set of sample indices.
///
/// Each epoch visits every index once, in an order shuffled by Fisher–Yates with a ChaCha8
/// generator keyed by `seed` on stream `epoch` (so epoch `e`'s order does not depend on whether
/// earlier epochs were run), cut into batches of `batch_size`; the last partial batch is kept
/// unless `drop_last` is set.
#[derive(Debug, Clone, PartialEq)]
pub struct MiniBatches {
    indices: Vec<usize>,
    batch_size: usize,
    seed: u64,
    shuffle: bool,
    drop_last: bool,
}

impl MiniBatches {
    /// A shuffling schedule over `indices` (e.g. `splits.first_train(n_data)?.to_vec()`),
    /// keeping the last partial batch.
    ///
    /// # Errors
    /// [`DatasetError::InvalidConfig`] when `batch_size` is 0.
    pub fn new(indices: Vec<usize>, batch_size: usize, seed: u64) -> Result<Self> {
        if batch_size == 0 {
            return Err(DatasetError::InvalidConfig(
                "batch_size must be at least 1".into(),
            ));
        }
        Ok(Self {
            indices,
            batch_size,
            seed,
            shuffle: true,
            drop_last: false,
        })
    }

    /// Drops (`true`) or keeps (`false`, the default) the last batch when it is smaller than
    /// `batch_size`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Shuffles every epoch (`true`, the default) or keeps the given order (`false`, for
    /// evaluation).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Batch size B.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Number of batches per epoch: `ceil(len / B)`, or `floor(len / B)` with `drop_last`.
    pub fn n_batches(&self) -> usize {
        if self.drop_last {
            self.indices.len() / self.batch_size
        } else {
            self.indices.len().div_ceil(self.batch_size)
        }
    }

    /// The order in which epoch `epoch` visits the indices.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order = self.indices.clone();
        if self.shuffle {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
            rng.set_stream(epoch);
            for i in (1..order.len()).rev() {
                let j = rng.random_range(0..=i);
                order.swap(i, j);
            }
        }
        order
    }

    /// The batches of epoch `epoch`, gathered (and centred) from `dataset` on demand.
    ///
    /// # Errors
    /// [`DatasetError::IndexOutOfRange`] when an index is `≥ dataset.len()` (checked up front,
    /// so the iterator itself cannot fail).
    pub fn epoch<'a>(&self, dataset: &'a ParticleDataset, epoch: u64) -> Result<EpochBatches<'a>> {
        let n_samples = dataset.len();
        if let Some(&index) = self.indices.iter().find(|&&i| i >= n_samples) {
            return Err(DatasetError::IndexOutOfRange { index, n_samples });
        }
        let mut order = self.epoch_order(epoch);
        order.truncate(self.n_batches() * self.batch_size);
        Ok(EpochBatches {
            dataset,
            order,
            batch_size: self.batch_size,
            next: 0,
        })
    }
}

/// Iterator over the batches of one epoch (see [`MiniBatches::epoch`]).
#[derive(Debug, Clone)]
pub struct EpochBatches<'a> {
    dataset: &'a ParticleDataset,
    order: Vec<usize>,
    batch_size: usize,
    next: usize,
}

impl Iterator for EpochBatches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let batch = Batch::gather_unchecked(self.dataset, &self.order[self.next..end]);
        self.next = end;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.next).div_ceil(self.batch_size);
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochBatches<'_> {}
