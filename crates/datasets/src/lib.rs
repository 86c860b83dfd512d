//! Data for E(n) Equivariant Normalizing Flows (Satorras et al., NeurIPS 2021): QM9 molecules
//! ([`qm9`]: acquisition, the standard split, stability), the DW4 and LJ13 energies, a seeded multi-chain Metropolis sampler, the HDF5 data-set format
//! (`docs/data-format.md`), import of the literature's `.npy` samples, the paper's splits, and a
//! seeded mini-batch loader that centres positions.
//!
//! No libtorch: everything is plain `Vec` / slices. Positions are float32 `[N, M, n]` row-major
//! (N samples, M particles, n dimensions), energies float64 in units of kT.
//!
//! ```no_run
//! use datasets::{ensure_dataset, MiniBatches, SplitName, System};
//!
//! let ds = ensure_dataset("data/dw4.h5", System::Dw4)?;
//! let train = ds.splits.first_train(1000)?.to_vec();
//! let loader = MiniBatches::new(train, 100, 0)?;
//! for batch in loader.epoch(&ds, 0)? {
//!     assert_eq!(batch.positions.len(), batch.batch_size * 4 * 2);
//! }
//! let val = ds.split_batch(SplitName::Val)?;
//! # Ok::<(), datasets::DatasetError>(())
//! ```

#![warn(missing_docs)]

pub mod atomic;
pub mod batch;
pub mod energy;
pub mod error;
pub mod generate;
pub mod h5;
pub mod mcmc;
pub mod npy;
pub mod particles;
pub mod qm9;
mod rng;
pub mod splits;
pub mod stats;
pub mod system;

pub use batch::{Batch, EpochBatches, MiniBatches};
pub use energy::{DoubleWell, Energy, LennardJones};
pub use error::{DatasetError, Result, IN_MEMORY};
pub use generate::{
    default_config, default_dw4_config, default_lj13_config, ensure_dataset, ensure_dataset_with,
    generate, read_dataset,
};
pub use h5::FORMAT_VERSION;
pub use mcmc::{metropolis, MetropolisConfig, Samples};
pub use npy::read_npy_positions;
pub use particles::{ParticleDataset, Source};
pub use qm9::{ensure_qm9, Element, Qm9Dataset};
pub use splits::{SplitName, Splits};
pub use system::System;
