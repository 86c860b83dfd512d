//! QM9 positional (the paper's Table 3) as a [`ParticleDataset`]: the molecules of QM9 with 19
//! atoms, positions only, so that every flow of Table 1 trains on it unchanged.
//!
//! Rows are the positional subset's training molecules, then its validation and test molecules,
//! each in QM9-index order ([`Qm9Dataset::positional`]); the splits are these three contiguous
//! blocks (13,832 / 2,501 / 1,813 for the full QM9, FACTS.md 2). Positions are in Angstrom as in
//! the source, not centred (the batch loader centres them); atom types are dropped. No energies.

use std::path::Path;

use super::{ensure_qm9, split, Qm9Dataset, MAX_ATOMS};
use crate::error::{DatasetError, Result};
use crate::particles::{ParticleDataset, Source};
use crate::splits::Splits;
use crate::system::System;

/// Prefix of the `source` attribute of a QM9-positional data set; the rest is the SHA-256 of the
/// QM9 source it was cut from.
pub const SOURCE_PREFIX: &str = "qm9-positional:qm9pack-sha256=";

/// The 19-atom molecules of `qm9` as a particle data set of [`System::Qm9Positional`]
/// (positions `[N, 19, 3]` float32 in Angstrom; splits from [`Qm9Dataset::positional`]).
///
/// # Errors
/// [`DatasetError::TooFewSamples`] when the subset has no training molecule;
/// [`DatasetError::InvalidValue`] for a positional row that does not have 19 atoms (an
/// inconsistent `qm9`); otherwise as [`ParticleDataset::new`].
pub fn positional_dataset(qm9: &Qm9Dataset) -> Result<ParticleDataset> {
    let m = System::Qm9Positional.n_particles();
    let p = &qm9.positional;
    if p.train.is_empty() {
        return Err(DatasetError::TooFewSamples {
            what: "QM9 molecules with 19 atoms in the training split".into(),
            needed: 1,
            available: 0,
        });
    }
    let rows: Vec<usize> = p
        .train
        .iter()
        .chain(&p.val)
        .chain(&p.test)
        .copied()
        .collect();
    let mut positions = Vec::with_capacity(rows.len() * m * 3);
    for &row in &rows {
        if qm9.n_atoms.get(row).map(|&a| a as usize) != Some(m) {
            return Err(DatasetError::InvalidValue {
                path: crate::IN_MEMORY.into(),
                object: format!("QM9 row {row} of the positional subset"),
                value: format!("{:?} atoms", qm9.n_atoms.get(row)),
                reason: format!("the positional subset holds molecules with {m} atoms"),
            });
        }
        let start = row * MAX_ATOMS * 3;
        let x =
            qm9.positions
                .get(start..start + m * 3)
                .ok_or_else(|| DatasetError::InvalidValue {
                    path: crate::IN_MEMORY.into(),
                    object: format!("QM9 row {row} of the positional subset"),
                    value: format!("{} positions in all", qm9.positions.len()),
                    reason: format!("rows hold {MAX_ATOMS} x 3 positions"),
                })?;
        positions.extend_from_slice(x);
    }
    let (n_train, n_val) = (p.train.len(), p.val.len());
    let splits = Splits {
        train: (0..n_train).collect(),
        val: (n_train..n_train + n_val).collect(),
        test: (n_train + n_val..rows.len()).collect(),
    };
    ParticleDataset::new(
        System::Qm9Positional.name(),
        m,
        3,
        positions,
        None,
        splits,
        Source::Other(format!("{SOURCE_PREFIX}{}", qm9.source_sha256)),
    )
}

/// Loads the QM9-positional data set from `path`, making it first when needed: a readable file
/// of [`System::Qm9Positional`] with the standard split sizes
/// ([`split::QM9_POSITIONAL_TRAIN`], ...) cut from a QM9 source is used as it is; otherwise QM9
/// is loaded (or made) at `qm9_path` with [`ensure_qm9`] (`cache_dir` as there), the subset cut
/// by [`positional_dataset`] and written atomically to `path`.
///
/// # Errors
/// As [`ensure_qm9`], [`positional_dataset`] and [`ParticleDataset::write`].
pub fn ensure_qm9_positional(
    path: impl AsRef<Path>,
    qm9_path: impl AsRef<Path>,
    cache_dir: Option<&Path>,
) -> Result<ParticleDataset> {
    let path = path.as_ref();
    if let Ok(ds) = ParticleDataset::read(path) {
        let sizes = (
            ds.splits.train.len(),
            ds.splits.val.len(),
            ds.splits.test.len(),
        );
        if ds.system == System::Qm9Positional.name()
            && ds.source.attribute().starts_with(SOURCE_PREFIX)
            && sizes
                == (
                    split::QM9_POSITIONAL_TRAIN,
                    split::QM9_POSITIONAL_VAL,
                    split::QM9_POSITIONAL_TEST,
                )
        {
            return Ok(ds);
        }
    }
    let qm9 = ensure_qm9(qm9_path, cache_dir)?;
    let ds = positional_dataset(&qm9)?;
    crate::atomic::ensure_parent_dir(path)?;
    ds.write(path)?;
    Ok(ds)
}
