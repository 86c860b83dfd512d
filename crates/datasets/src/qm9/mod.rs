//! QM9 (Ramakrishnan et al. 2014): 130,831 small organic molecules of up to 29 atoms of H, C, N,
//! O, F with equilibrium positions, as the E-NF paper's Tables 2 and 3 use it (FACTS.md
//! section 2).
//!
//! [`ensure_qm9`] makes `data/qm9.h5` with no manual step: it fetches the `qm9pack==1.0.3` wheel
//! ([`source`]), checks its SHA-256, parses its CSV files, sorts the molecules by index, pads them
//! to [`MAX_ATOMS`] atoms, attaches the standard split ([`split`]) and the 19-atom positional
//! subset ([`positional`]: Table 3's data as a particle data set), and writes the file atomically (layout in `docs/data-format.md`). A file that is
//! unreadable, truncated or from another source is rebuilt, never used.
//!
//! Arrays are row-major `Vec`s: `atomic_numbers` uint8 `[N, 29]`, `positions` float32
//! `[N, 29, 3]` in Angstrom (not centred), padded entries exactly 0.

pub mod divergence;
pub mod positional;
pub mod source;
pub mod split;
pub mod stability;
pub mod xyz;

mod file;

use std::path::Path;

use crate::error::{DatasetError, Result};
use crate::splits::Splits;

pub use divergence::{
    distance_histogram, js_divergence, pair_distance_histogram, relative_distance_js,
};
pub use file::QM9_FORMAT_VERSION;
pub use positional::{ensure_qm9_positional, positional_dataset};
pub use source::{ensure_wheel, RawMolecule, QM9PACK_SHA256};
pub use split::{
    legacy_permutation, standard_split, QM9_MOLECULES, QM9_POSITIONAL_ATOMS, QM9_POSITIONAL_TEST,
    QM9_POSITIONAL_TRAIN, QM9_POSITIONAL_VAL, QM9_TEST, QM9_TRAIN, QM9_VAL,
};
pub use stability::{bond_order, molecule_stability, MoleculeStability, StabilitySummary};
pub use xyz::{parse_xyz, to_xyz, write_xyz, Molecule};

/// Largest number of atoms in a QM9 molecule; arrays are padded to it.
pub const MAX_ATOMS: usize = 29;

/// The five elements of QM9, in the order of the one-hot atom-type features (H, C, N, O, F).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Element {
    /// Hydrogen (Z = 1).
    H = 1,
    /// Carbon (Z = 6).
    C = 6,
    /// Nitrogen (Z = 7).
    N = 7,
    /// Oxygen (Z = 8).
    O = 8,
    /// Fluorine (Z = 9).
    F = 9,
}

impl Element {
    /// All five, in one-hot order.
    pub const ALL: [Element; 5] = [Element::H, Element::C, Element::N, Element::O, Element::F];

    /// The element of atomic number `z`, if it is one of QM9's.
    pub fn from_atomic_number(z: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|e| *e as u8 == z)
    }

    /// The element with chemical symbol `symbol` (`"H"`, `"C"`, ...), if it is one of QM9's.
    pub fn from_symbol(symbol: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.symbol() == symbol)
    }

    /// The atomic number.
    pub fn atomic_number(self) -> u8 {
        self as u8
    }

    /// The chemical symbol.
    pub fn symbol(self) -> &'static str {
        match self {
            Element::H => "H",
            Element::C => "C",
            Element::N => "N",
            Element::O => "O",
            Element::F => "F",
        }
    }

    /// Position in the one-hot atom-type vector (H 0, C 1, N 2, O 3, F 4).
    pub fn one_hot_index(self) -> usize {
        Self::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }

    /// The valence used by the stability check: H 1, C 4, N 3, O 2, F 1.
    pub fn valence(self) -> u32 {
        match self {
            Element::H | Element::F => 1,
            Element::C => 4,
            Element::N => 3,
            Element::O => 2,
        }
    }
}

/// The QM9 molecules, sorted by index, padded to [`MAX_ATOMS`].
#[derive(Debug, Clone, PartialEq)]
pub struct Qm9Dataset {
    /// QM9 molecule index of each row (gdb id, 1 … 133,885), strictly increasing. `[N]`.
    pub index: Vec<u32>,
    /// Number of real atoms of each molecule, 1 … 29. `[N]`.
    pub n_atoms: Vec<u8>,
    /// Atomic numbers, row-major `[N, 29]`; 0 beyond a molecule's atom count.
    pub atomic_numbers: Vec<u8>,
    /// Positions in Angstrom as in the source (not centred), row-major `[N, 29, 3]`; 0 beyond
    /// a molecule's atom count.
    pub positions: Vec<f32>,
    /// The standard split (row indices), see [`split`].
    pub splits: Splits,
    /// The QM9-positional subset of each split: its molecules with 19 atoms (Table 3).
    pub positional: Splits,
    /// SHA-256 of the source the data came from (the qm9pack wheel), lowercase hex.
    pub source_sha256: String,
}

impl Qm9Dataset {
    /// Builds the data set from parsed molecules (any order): sorts them by index, pads them,
    /// and attaches the standard split when there are [`QM9_MOLECULES`] of them, or `splits`
    /// when given (small synthetic sets in tests). The positional subset is derived from the
    /// split.
    ///
    /// # Errors
    /// [`DatasetError::InvalidValue`] for duplicate indices or atom counts outside 1..=29;
    /// [`DatasetError::NonFinite`] for positions that are not finite; [`DatasetError::InvalidConfig`] when no split is given and
    /// the count is not 130,831; split errors as [`standard_split`] and
    /// [`Splits::validate`].
    pub fn from_molecules(
        mut molecules: Vec<RawMolecule>,
        splits: Option<Splits>,
        source_sha256: &str,
    ) -> Result<Self> {
        molecules.sort_by_key(|m| m.index);
        let n = molecules.len();
        if let Some(w) = molecules.windows(2).find(|w| w[0].index == w[1].index) {
            return Err(invalid("index", w[0].index.to_string(), "appears twice"));
        }
        let mut ds = Self {
            index: Vec::with_capacity(n),
            n_atoms: Vec::with_capacity(n),
            atomic_numbers: vec![0; n * MAX_ATOMS],
            positions: vec![0.0; n * MAX_ATOMS * 3],
            splits: Splits::default(),
            positional: Splits::default(),
            source_sha256: source_sha256.into(),
        };
        for (row, m) in molecules.iter().enumerate() {
            let count = m.atomic_numbers.len();
            if count == 0 || count > MAX_ATOMS || m.positions.len() != count {
                return Err(invalid(
                    "atom count",
                    format!("{count} (molecule {})", m.index),
                    "must be 1..=29 with one position per atom",
                ));
            }
            ds.index.push(m.index);
            ds.n_atoms.push(count as u8);
            ds.atomic_numbers[row * MAX_ATOMS..row * MAX_ATOMS + count]
                .copy_from_slice(&m.atomic_numbers);
            for (a, p) in m.positions.iter().enumerate() {
                let at = (row * MAX_ATOMS + a) * 3;
                for (dst, &v) in ds.positions[at..at + 3].iter_mut().zip(p) {
                    *dst = v as f32;
                }
            }
        }
        ds.splits = match splits {
            Some(s) => s,
            None if n == QM9_MOLECULES => {
                standard_split(n, QM9_TRAIN, QM9_VAL, split::QM9_SPLIT_SEED)?
            }
            None => {
                return Err(DatasetError::InvalidConfig(format!(
                    "the standard QM9 split needs {QM9_MOLECULES} molecules, got {n}"
                )))
            }
        };
        ds.positional = split::subset_by_atom_count(&ds.splits, &ds.n_atoms, QM9_POSITIONAL_ATOMS);
        ds.validate_for(Path::new(crate::IN_MEMORY))?;
        Ok(ds)
    }

    /// Number of molecules.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no molecules.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Atomic numbers of molecule `row`'s real atoms, or `None` when `row` is out of range (or
    /// the public arrays were made inconsistent).
    pub fn molecule_atomic_numbers(&self, row: usize) -> Option<&[u8]> {
        let m = (*self.n_atoms.get(row)? as usize).min(MAX_ATOMS);
        self.atomic_numbers
            .get(row * MAX_ATOMS..row * MAX_ATOMS + m)
    }

    /// Positions `[M, 3]` (row-major, Angstrom) of molecule `row`'s real atoms, or `None` when
    /// `row` is out of range (or the public arrays were made inconsistent).
    pub fn molecule_positions(&self, row: usize) -> Option<&[f32]> {
        let m = (*self.n_atoms.get(row)? as usize).min(MAX_ATOMS);
        self.positions
            .get(row * MAX_ATOMS * 3..(row * MAX_ATOMS + m) * 3)
    }

    /// Number of atoms of each element over the molecules `rows` (H, C, N, O, F order).
    ///
    /// # Errors
    /// [`DatasetError::IndexOutOfRange`] for a row beyond the data set.
    pub fn element_counts(&self, rows: impl IntoIterator<Item = usize>) -> Result<[usize; 5]> {
        let mut counts = [0usize; 5];
        for row in rows {
            for &z in self.atoms_of(row)? {
                if let Some(e) = Element::from_atomic_number(z) {
                    counts[e.one_hot_index()] += 1;
                }
            }
        }
        Ok(counts)
    }

    /// Stability ([`stability`]) pooled over the molecules `rows`.
    ///
    /// # Errors
    /// [`DatasetError::IndexOutOfRange`] for a row beyond the data set.
    pub fn stability(&self, rows: impl IntoIterator<Item = usize>) -> Result<StabilitySummary> {
        let mut summary = StabilitySummary::default();
        for row in rows {
            let z = self.atoms_of(row)?;
            let x = self.molecule_positions(row).unwrap_or_default();
            summary.add(molecule_stability(z, x)?);
        }
        Ok(summary)
    }

    /// Histogram of atom counts: entry `m` = number of molecules among `rows` with `m` atoms,
    /// for `m` in `0 ..= 29` (the node-count distribution p(M) of the E-NF before normalising).
    ///
    /// # Errors
    /// [`DatasetError::IndexOutOfRange`] for a row beyond the data set.
    pub fn atom_count_histogram(
        &self,
        rows: impl IntoIterator<Item = usize>,
    ) -> Result<[u64; MAX_ATOMS + 1]> {
        let mut h = [0u64; MAX_ATOMS + 1];
        for row in rows {
            h[self.atoms_of(row)?.len()] += 1;
        }
        Ok(h)
    }

    fn atoms_of(&self, row: usize) -> Result<&[u8]> {
        self.molecule_atomic_numbers(row)
            .ok_or(DatasetError::IndexOutOfRange {
                index: row,
                n_samples: self.len(),
            })
    }

    /// Whether this is the complete standard data set from the pinned source: 130,831
    /// molecules, the standard split sizes, the pinned wheel digest.
    pub fn is_complete(&self) -> bool {
        self.len() == QM9_MOLECULES
            && self.source_sha256 == QM9PACK_SHA256
            && self.splits.train.len() == QM9_TRAIN
            && self.splits.val.len() == QM9_VAL
            && self.splits.test.len() == QM9_TEST
    }

    /// Checks the invariants: array lengths, strictly increasing indices, atom counts 1..=29,
    /// atomic numbers of H, C, N, O, F on real atoms and 0 on padding, finite positions with
    /// padding exactly 0, split indices in range. `path` only labels errors.
    ///
    /// # Errors
    /// [`DatasetError::WrongShape`], [`DatasetError::InvalidValue`],
    /// [`DatasetError::NonFinite`], [`DatasetError::SplitIndexOutOfRange`], naming `path`.
    pub fn validate_for(&self, path: &Path) -> Result<()> {
        let n = self.len();
        let shape = |object: &str, expected: String, found: usize| DatasetError::WrongShape {
            path: path.to_path_buf(),
            object: object.into(),
            expected,
            found: vec![found as u64],
        };
        if self.n_atoms.len() != n {
            return Err(shape("/n_atoms", format!("[{n}]"), self.n_atoms.len()));
        }
        if self.atomic_numbers.len() != n * MAX_ATOMS {
            return Err(shape(
                "/atomic_numbers",
                format!("{} values ([{n}, 29])", n * MAX_ATOMS),
                self.atomic_numbers.len(),
            ));
        }
        if self.positions.len() != n * MAX_ATOMS * 3 {
            return Err(shape(
                "/positions",
                format!("{} values ([{n}, 29, 3])", n * MAX_ATOMS * 3),
                self.positions.len(),
            ));
        }
        let bad = |object: &str, value: String, reason: &str| DatasetError::InvalidValue {
            path: path.to_path_buf(),
            object: object.into(),
            value,
            reason: reason.into(),
        };
        if let Some(w) = self.index.windows(2).find(|w| w[0] >= w[1]) {
            return Err(bad(
                "/index",
                format!("{} then {}", w[0], w[1]),
                "must be strictly increasing",
            ));
        }
        for row in 0..n {
            let m = self.n_atoms[row] as usize;
            if m == 0 || m > MAX_ATOMS {
                return Err(bad(
                    "/n_atoms",
                    format!("{m} (row {row})"),
                    "must be 1..=29",
                ));
            }
            let z = &self.atomic_numbers[row * MAX_ATOMS..(row + 1) * MAX_ATOMS];
            let x = &self.positions[row * MAX_ATOMS * 3..(row + 1) * MAX_ATOMS * 3];
            if let Some(a) = (0..m).find(|&a| Element::from_atomic_number(z[a]).is_none()) {
                return Err(bad(
                    "/atomic_numbers",
                    format!("{} (row {row}, atom {a})", z[a]),
                    "not one of H, C, N, O, F",
                ));
            }
            if let Some(a) = (m..MAX_ATOMS).find(|&a| z[a] != 0 || x[3 * a..3 * a + 3] != [0.0; 3])
            {
                return Err(bad(
                    "padding",
                    format!("row {row}, atom {a}"),
                    "padded atoms must have atomic number 0 and position 0",
                ));
            }
            if let Some(k) = x.iter().position(|v| !v.is_finite()) {
                return Err(DatasetError::NonFinite {
                    path: path.to_path_buf(),
                    dataset: "/positions".into(),
                    index: row * MAX_ATOMS * 3 + k,
                });
            }
        }
        self.splits.validate(n, path)?;
        self.positional.validate(n, path)
    }
}

fn invalid(object: &str, value: String, reason: &str) -> DatasetError {
    DatasetError::InvalidValue {
        path: crate::IN_MEMORY.into(),
        object: object.into(),
        value,
        reason: reason.into(),
    }
}

/// Loads QM9 from `path`, making it first when needed: when `path` is absent, unreadable,
/// truncated, invalid or not the complete standard set ([`Qm9Dataset::is_complete`]), the wheel
/// is fetched into `cache_dir` ([`ensure_wheel`], `None` = [`source::default_cache_dir`]),
/// parsed, and the file rewritten atomically (about 20 s here once the wheel is cached).
///
/// # Errors
/// As [`ensure_wheel`], [`source::read_wheel`], [`Qm9Dataset::from_molecules`] and
/// [`Qm9Dataset::write`]; [`DatasetError::Io`] when the parent directory cannot be created.
pub fn ensure_qm9(path: impl AsRef<Path>, cache_dir: Option<&Path>) -> Result<Qm9Dataset> {
    let path = path.as_ref();
    if path.exists() {
        if let Ok(ds) = Qm9Dataset::read(path) {
            if ds.is_complete() {
                return Ok(ds);
            }
        }
    }
    let cache = match cache_dir {
        Some(c) => c.to_path_buf(),
        None => source::default_cache_dir()?,
    };
    let wheel = ensure_wheel(&cache)?;
    let molecules = source::read_wheel(&wheel)?;
    let ds = Qm9Dataset::from_molecules(molecules, None, QM9PACK_SHA256)?;
    crate::atomic::ensure_parent_dir(path)?;
    ds.write(path)?;
    Ok(ds)
}
