//! The named particle systems of the E-NF paper's Table 1.

use std::fmt;
use std::str::FromStr;

use crate::energy::{DoubleWell, Energy, LennardJones};
use crate::error::DatasetError;

/// A named particle system. Its name is what the HDF5 `system` attribute stores.
/// In configuration files (serde) it is written in lower case: `"dw4"`, `"lj13"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// DW4: 4 particles in 2D under the double-well pair potential ([`DoubleWell::dw4`]).
    #[serde(alias = "Dw4", alias = "DW4")]
    Dw4,
    /// LJ13: 13 particles in 3D, Lennard-Jones plus harmonic trap ([`LennardJones::lj13`]).
    #[serde(alias = "Lj13", alias = "LJ13")]
    Lj13,
}

impl System {
    /// The canonical name: `"DW4"` or `"LJ13"`.
    pub fn name(self) -> &'static str {
        match self {
            System::Dw4 => "DW4",
            System::Lj13 => "LJ13",
        }
    }

    /// Number of particles M (4 or 13).
    pub fn n_particles(self) -> usize {
        match self {
            System::Dw4 => 4,
            System::Lj13 => 13,
        }
    }

    /// Spatial dimension n (2 or 3).
    pub fn n_dims(self) -> usize {
        match self {
            System::Dw4 => 2,
            System::Lj13 => 3,
        }
    }

    /// The system's energy function.
    pub fn energy(self) -> Box<dyn Energy + Send + Sync> {
        match self {
            System::Dw4 => Box::new(DoubleWell::dw4()),
            System::Lj13 => Box::new(LennardJones::lj13()),
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

    /// Parses `"DW4"` / `"LJ13"`, case-insensitively.
    ///
    /// # Errors
    /// [`DatasetError::UnknownSystem`] for any other name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "DW4" => Ok(System::Dw4),
            "LJ13" => Ok(System::Lj13),
            _ => Err(DatasetError::UnknownSystem(s.to_string())),
        }
    }
}
