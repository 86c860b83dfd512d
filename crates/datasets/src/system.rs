//! The named particle systems of the E-NF paper: DW4 and LJ13 (Table 1) and QM9 positional
//! (Table 3).

use std::fmt;
use std::str::FromStr;

use crate::energy::{DoubleWell, Energy, LennardJones};
use crate::error::DatasetError;

/// A named particle system. Its name is what the HDF5 `system` attribute stores.
/// In configuration files (serde) it is written in lower case: `"dw4"`, `"lj13"`,
/// `"qm9_positional"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// DW4: 4 particles in 2D under the double-well pair potential ([`DoubleWell::dw4`]).
    #[serde(alias = "Dw4", alias = "DW4")]
    Dw4,
    /// LJ13: 13 particles in 3D, Lennard-Jones plus harmonic trap ([`LennardJones::lj13`]).
    #[serde(alias = "Lj13", alias = "LJ13")]
    Lj13,
    /// QM9 positional (Table 3): the QM9 molecules with 19 atoms, positions only (Angstrom, 3D),
    /// taken from the QM9 file ([`crate::qm9::positional_dataset`]); no energy function.
    #[serde(rename = "qm9_positional", alias = "QM9-positional")]
    Qm9Positional,
}

impl System {
    /// The canonical name: `"DW4"`, `"LJ13"` or `"QM9-positional"`.
    pub fn name(self) -> &'static str {
        match self {
            System::Dw4 => "DW4",
            System::Lj13 => "LJ13",
            System::Qm9Positional => "QM9-positional",
        }
    }

    /// The stem of the system's default data file, `data/<stem>.h5`: `"dw4"`, `"lj13"`,
    /// `"qm9_positional"`.
    pub fn file_stem(self) -> &'static str {
        match self {
            System::Dw4 => "dw4",
            System::Lj13 => "lj13",
            System::Qm9Positional => "qm9_positional",
        }
    }

    /// Number of particles M (4, 13 or 19).
    pub fn n_particles(self) -> usize {
        match self {
            System::Dw4 => 4,
            System::Lj13 => 13,
            System::Qm9Positional => crate::qm9::QM9_POSITIONAL_ATOMS,
        }
    }

    /// Spatial dimension n (2 or 3).
    pub fn n_dims(self) -> usize {
        match self {
            System::Dw4 => 2,
            System::Lj13 | System::Qm9Positional => 3,
        }
    }

    /// The system's energy function; `None` for QM9 positional, whose samples are molecules of
    /// a data set rather than draws from a known Boltzmann density.
    pub fn energy(self) -> Option<Box<dyn Energy + Send + Sync>> {
        match self {
            System::Dw4 => Some(Box::new(DoubleWell::dw4())),
            System::Lj13 => Some(Box::new(LennardJones::lj13())),
            System::Qm9Positional => None,
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for System {
    type Err = DatasetError;

    /// Parses `"DW4"`, `"LJ13"` or `"QM9-positional"` (also `qm9_positional`, `qm9pos`),
    /// case-insensitively.
    ///
    /// # Errors
    /// [`DatasetError::UnknownSystem`] for any other name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "DW4" => Ok(System::Dw4),
            "LJ13" => Ok(System::Lj13),
            "QM9-POSITIONAL" | "QM9_POSITIONAL" | "QM9POS" => Ok(System::Qm9Positional),
            _ => Err(DatasetError::UnknownSystem(s.to_string())),
        }
    }
}
