//! Train / validation / test splits as lists of sample indices.

use std::path::Path;

use crate::error::{DatasetError, Result};

/// Which split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum SplitName {
    /// Training samples.
    Train,
    /// Validation samples.
    Val,
    /// Test samples.
    Test,
}

impl SplitName {
    /// All three, in file order.
    pub const ALL: [SplitName; 3] = [SplitName::Train, SplitName::Val, SplitName::Test];

    /// `"train"`, `"val"` or `"test"` (the dataset name under `/splits` in the HDF5 file).
    pub fn as_str(self) -> &'static str {
        match self {
            SplitName::Train => "train",
            SplitName::Val => "val",
            SplitName::Test => "test",
        }
    }
}

/// Sample indices (into `[0, N)`) of the three splits. Indices may repeat and splits may overlap;
/// [`Splits::tail`] produces disjoint, sorted ones.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Splits {
    /// Training indices, in the order an experiment takes them (it uses the first `n_data`).
    pub train: Vec<usize>,
    /// Validation indices.
    pub val: Vec<usize>,
    /// Test indices.
    pub test: Vec<usize>,
}

impl Splits {
    /// The paper's DW4 rule (E-NF, following Köhler et al. 2020): of `n_total` samples in file
    /// order, test = the last `n_test`, validation = the `n_val` before them, training =
    /// everything before that (`0 .. n_total − n_val − n_test`). For the paper `n_val = n_test =
    /// 1000`.
    ///
    /// # Errors
    /// [`DatasetError::TooFewSamples`] unless `n_total ≥ n_val + n_test + 1` (at least one
    /// training sample).
    pub fn tail(n_total: usize, n_val: usize, n_test: usize) -> Result<Self> {
        let needed = n_val.checked_add(n_test).and_then(|s| s.checked_add(1));
        if needed.is_none_or(|n| n > n_total) {
            return Err(DatasetError::TooFewSamples {
                what: format!("{n_val} validation + {n_test} test + at least 1 training"),
                needed: needed.unwrap_or(usize::MAX),
                available: n_total,
            });
        }
        let n_train = n_total - n_val - n_test;
        Ok(Self {
            train: (0..n_train).collect(),
            val: (n_train..n_train + n_val).collect(),
            test: (n_train + n_val..n_total).collect(),
        })
    }

    /// The indices of one split.
    pub fn get(&self, name: SplitName) -> &[usize] {
        match name {
            SplitName::Train => &self.train,
            SplitName::Val => &self.val,
            SplitName::Test => &self.test,
        }
    }

    /// The first `n_data` training indices: the training set of an experiment with `n_data`
    /// samples (Table 1 sweeps 100 … 100,000 for DW4).
    ///
    /// # Errors
    /// [`DatasetError::TooFewSamples`] when the training split is shorter than `n_data`.
    pub fn first_train(&self, n_data: usize) -> Result<&[usize]> {
        self.train
            .get(..n_data)
            .ok_or_else(|| DatasetError::TooFewSamples {
                what: "training samples".into(),
                needed: n_data,
                available: self.train.len(),
            })
    }

    /// Checks that every index is below `n_samples`; `path` only labels the error.
    ///
    /// # Errors
    /// [`DatasetError::SplitIndexOutOfRange`] naming `/splits/<name>` and the first bad entry.
    pub fn validate(&self, n_samples: usize, path: &Path) -> Result<()> {
        for name in SplitName::ALL {
            if let Some((position, &index)) = self
                .get(name)
                .iter()
                .enumerate()
                .find(|(_, &i)| i >= n_samples)
            {
                return Err(DatasetError::SplitIndexOutOfRange {
                    path: path.to_path_buf(),
                    dataset: format!("/splits/{}", name.as_str()),
                    position,
                    index: index as u64,
                    n_samples,
                });
            }
        }
        Ok(())
    }
}
