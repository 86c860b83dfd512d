//! Batches of QM9 molecules as tensors, padded to the largest molecule of the batch.

use datasets::qm9::{Qm9Dataset, MAX_ATOMS};
use datasets::{DatasetError, Element};
use egnn::Masks;
use tch::{Device, Kind, Tensor};

use crate::error::ExperimentError;

/// A padded batch of molecules. `B` molecules, `M` = the largest atom count among them.
#[derive(Debug)]
pub struct Qm9Batch {
    /// Positions `[B, M, 3]` in Angstrom, centred over each molecule's real atoms, 0 at padding.
    pub x: Tensor,
    /// One-hot atom types `[B, M, 5]` (H, C, N, O, F), 0 at padding.
    pub one_hot: Tensor,
    /// Atomic numbers `[B, M, 1]` as floats (the reference's "charges"), 0 at padding.
    pub charges: Tensor,
    /// Node and edge masks (edges: ordered pairs of distinct real atoms).
    pub masks: Masks,
    /// The data set rows of the molecules, in batch order.
    pub rows: Vec<usize>,
}

impl Qm9Batch {
    /// Gathers the molecules `rows` of `ds` in float `kind` on `device`.
    ///
    /// Errors: [`ExperimentError::Data`] ([`DatasetError::IndexOutOfRange`]) for a row beyond
    /// the data set, or an empty `rows`.
    pub fn gather(
        ds: &Qm9Dataset,
        rows: &[usize],
        kind: Kind,
        device: Device,
    ) -> Result<Self, ExperimentError> {
        let b = rows.len();
        let mut m_max = 0usize;
        for &r in rows {
            let m = *ds.n_atoms.get(r).ok_or(DatasetError::IndexOutOfRange {
                index: r,
                n_samples: ds.len(),
            })? as usize;
            m_max = m_max.max(m.min(MAX_ATOMS));
        }
        if b == 0 {
            return Err(ExperimentError::Model("an empty batch of molecules".into()));
        }
        let mut x = vec![0f32; b * m_max * 3];
        let mut one_hot = vec![0f32; b * m_max * 5];
        let mut charges = vec![0f32; b * m_max];
        let mut mask = vec![0f32; b * m_max];
        let out_of_range = |r: usize| DatasetError::IndexOutOfRange {
            index: r,
            n_samples: ds.len(),
        };
        for (i, &r) in rows.iter().enumerate() {
            let pos = ds.molecule_positions(r).ok_or_else(|| out_of_range(r))?;
            let zs = ds
                .molecule_atomic_numbers(r)
                .ok_or_else(|| out_of_range(r))?;
            let m = zs.len().min(pos.len() / 3);
            let mut mean = [0f64; 3];
            for a in 0..m {
                for k in 0..3 {
                    mean[k] += f64::from(pos[3 * a + k]) / m as f64;
                }
            }
            for a in 0..m {
                let node = i * m_max + a;
                for k in 0..3 {
                    x[node * 3 + k] = (f64::from(pos[3 * a + k]) - mean[k]) as f32;
                }
                let z = zs[a];
                let e = Element::from_atomic_number(z).ok_or(DatasetError::InvalidValue {
                    path: datasets::IN_MEMORY.into(),
                    object: "atomic number".into(),
                    value: z.to_string(),
                    reason: "not one of H, C, N, O, F".into(),
                })?;
                one_hot[node * 5 + e.one_hot_index()] = 1.0;
                charges[node] = f32::from(z);
                mask[node] = 1.0;
            }
        }
        let (b, m) = (b as i64, m_max as i64);
        let t = |v: &[f32], shape: &[i64]| {
            Tensor::from_slice(v)
                .view(shape)
                .to_kind(kind)
                .to_device(device)
        };
        let node = t(&mask, &[b, m]);
        Ok(Qm9Batch {
            x: t(&x, &[b, m, 3]),
            one_hot: t(&one_hot, &[b, m, 5]),
            charges: t(&charges, &[b, m, 1]),
            masks: Masks::from_node_mask(&node),
            rows: rows.to_vec(),
        })
    }

    /// The batch with every molecule rotated about its centre by its own random rotation (Haar
    /// on SO(3), [`crate::data::rotate_rows`]); atom types, masks and rows unchanged. The
    /// GNF-attention-augmentation training augmentation.
    pub fn randomly_rotated(&self, rng: &mut impl rand::Rng) -> Qm9Batch {
        Qm9Batch {
            x: crate::data::rotate_rows(&self.x, rng),
            one_hot: self.one_hot.shallow_clone(),
            charges: self.charges.shallow_clone(),
            masks: Masks::from_node_mask(&self.masks.node),
            rows: self.rows.clone(),
        }
    }

    /// Number of molecules.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the batch is empty (never, for a gathered batch).
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}
