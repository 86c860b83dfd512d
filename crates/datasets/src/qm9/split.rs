//! The standard QM9 split the paper's numbers use (FACTS.md section 2, following the EGNN / E-NF
//! code, itself following Anderson et al. 2019): molecules sorted by index, numpy's legacy
//! `RandomState(0).permutation(130831)`, train = its first 100,000 entries, validation the next
//! 17,748, test the last 13,083; inside a split molecules stay in index order.

use rand_mt::Mt;

use crate::error::{DatasetError, Result};
use crate::splits::Splits;

/// Number of molecules in the characterised QM9 set.
pub const QM9_MOLECULES: usize = 130_831;
/// Size of the standard training split.
pub const QM9_TRAIN: usize = 100_000;
/// Size of the standard validation split.
pub const QM9_VAL: usize = 17_748;
/// Size of the standard test split.
pub const QM9_TEST: usize = 13_083;
/// Seed of the split's permutation.
pub const QM9_SPLIT_SEED: u32 = 0;
/// Atom count of the molecules of QM9 positional (Table 3).
pub const QM9_POSITIONAL_ATOMS: usize = 19;
/// Training molecules of QM9 positional (FACTS.md 2).
pub const QM9_POSITIONAL_TRAIN: usize = 13_832;
/// Validation molecules of QM9 positional.
pub const QM9_POSITIONAL_VAL: usize = 2_501;
/// Test molecules of QM9 positional.
pub const QM9_POSITIONAL_TEST: usize = 1_813;

/// numpy's legacy `np.random.RandomState(seed).permutation(n)`: MT19937 seeded by
/// `init_genrand(seed)`, then a Fisher-Yates shuffle of `0..n` from the end: for `i` from `n - 1`
/// down to 1, draw 32-bit words masked to the smallest `2^k - 1 >= i` until one is `<= i`, and
/// swap positions `i` and `j`. Bit-identical to numpy for `n < 2^32`.
///
/// # Errors
/// [`DatasetError::InvalidConfig`] when `n >= 2^32` (numpy then draws 64-bit words; not needed
/// here).
pub fn legacy_permutation(n: usize, seed: u32) -> Result<Vec<usize>> {
    if n as u64 > u64::from(u32::MAX) {
        return Err(DatasetError::InvalidConfig(format!(
            "legacy_permutation supports n < 2^32, got {n}"
        )));
    }
    let mut mt = Mt::new(seed);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let max = i as u32;
        let mask = u32::MAX >> max.leading_zeros();
        let j = loop {
            let v = mt.next_u32() & mask;
            if v <= max {
                break v as usize;
            }
        };
        p.swap(i, j);
    }
    Ok(p)
}

/// The standard split of `n` molecules sorted by index with the sizes given: the first
/// `n_train` entries of [`legacy_permutation`]`(n, seed)` are the training molecules, the next
/// `n_val` the validation ones, the rest the test ones; each split is sorted.
///
/// # Errors
/// [`DatasetError::TooFewSamples`] when `n_train + n_val > n`.
pub fn standard_split(n: usize, n_train: usize, n_val: usize, seed: u32) -> Result<Splits> {
    if n_train + n_val > n {
        return Err(DatasetError::TooFewSamples {
            what: format!("{n_train} training + {n_val} validation molecules"),
            needed: n_train + n_val,
            available: n,
        });
    }
    let p = legacy_permutation(n, seed)?;
    let sorted = |s: &[usize]| {
        let mut v = s.to_vec();
        v.sort_unstable();
        v
    };
    Ok(Splits {
        train: sorted(&p[..n_train]),
        val: sorted(&p[n_train..n_train + n_val]),
        test: sorted(&p[n_train + n_val..]),
    })
}

/// The molecules of each split of `splits` that have `n_atoms_wanted` atoms (QM9 positional:
/// 19), order kept.
pub fn subset_by_atom_count(splits: &Splits, n_atoms: &[u8], n_atoms_wanted: usize) -> Splits {
    let keep = |s: &[usize]| {
        s.iter()
            .copied()
            .filter(|&i| {
                n_atoms
                    .get(i)
                    .is_some_and(|&m| m as usize == n_atoms_wanted)
            })
            .collect()
    };
    Splits {
        train: keep(&splits.train),
        val: keep(&splits.val),
        test: keep(&splits.test),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_matches_numpy_legacy() {
        // numpy 2.4: np.random.RandomState(0).permutation(10) and (130831)[:5].
        assert_eq!(
            legacy_permutation(10, 0).unwrap(),
            vec![2, 8, 4, 9, 1, 6, 7, 3, 0, 5]
        );
        let p = legacy_permutation(QM9_MOLECULES, QM9_SPLIT_SEED).unwrap();
        assert_eq!(&p[..5], &[130195, 68784, 7957, 25911, 20168]);
        let mut s = p.clone();
        s.sort_unstable();
        assert!(s.iter().enumerate().all(|(i, &v)| i == v));
    }

    #[test]
    fn standard_split_sizes_and_order() {
        let s = standard_split(QM9_MOLECULES, QM9_TRAIN, QM9_VAL, 0).unwrap();
        assert_eq!(
            (s.train.len(), s.val.len(), s.test.len()),
            (QM9_TRAIN, QM9_VAL, QM9_TEST)
        );
        assert!(s.train.windows(2).all(|w| w[0] < w[1]));
        assert!(s.train.binary_search(&130195).is_ok());
        assert!(standard_split(10, 8, 3, 0).is_err());
    }
}
