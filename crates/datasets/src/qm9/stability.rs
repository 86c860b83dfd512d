//! Molecule stability (the paper's Table 2, FACTS.md section 2): bond orders from interatomic
//! distances and reference bond lengths, valences summed per atom, an atom stable when its sum
//! equals its element's valence, a molecule stable when all its atoms are.

use crate::error::{DatasetError, Result};

use super::Element;

/// Reference bond lengths in picometres `(single, double, triple)` for a pair of elements
/// (symmetric); `None` where the pair never bonds, `0` where the bond order does not exist.
fn bond_lengths(a: Element, b: Element) -> Option<(u32, u32, u32)> {
    use Element::*;
    let (a, b) = if (a as u8) <= (b as u8) {
        (a, b)
    } else {
        (b, a)
    };
    Some(match (a, b) {
        (H, H) => (74, 0, 0),
        (H, C) => (109, 0, 0),
        (H, N) => (101, 0, 0),
        (H, O) => (96, 0, 0),
        (H, F) => (92, 0, 0),
        (C, C) => (154, 134, 120),
        (C, N) => (147, 129, 116),
        (C, O) => (143, 120, 113),
        (C, F) => (135, 0, 0),
        (N, N) => (145, 125, 110),
        (N, O) => (140, 121, 0),
        (N, F) => (136, 0, 0),
        (O, O) => (148, 121, 0),
        (O, F) => (142, 0, 0),
        (F, F) => (142, 0, 0),
        _ => return None,
    })
}

/// Bond order (0-3) between atoms of elements `a` and `b` at distance `distance` Angstrom:
/// 0 when `100 d >= single + 10` pm, else 1, 2 when also `100 d < double + 5`, 3 when also
/// `100 d < triple + 3` (strict comparisons; orders without a reference length are skipped).
pub fn bond_order(a: Element, b: Element, distance: f64) -> u8 {
    let Some((single, double, triple)) = bond_lengths(a, b) else {
        return 0;
    };
    let pm = 100.0 * distance;
    if pm >= f64::from(single + 10) {
        return 0;
    }
    if double == 0 || pm >= f64::from(double + 5) {
        return 1;
    }
    if triple == 0 || pm >= f64::from(triple + 3) {
        return 2;
    }
    3
}

/// Stability of one molecule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoleculeStability {
    /// Number of atoms whose summed bond orders equal their valence.
    pub stable_atoms: usize,
    /// Number of atoms.
    pub n_atoms: usize,
}

impl MoleculeStability {
    /// Whether every atom is stable.
    pub fn is_stable(&self) -> bool {
        self.stable_atoms == self.n_atoms
    }
}

/// Stability of a molecule given its atomic numbers `[M]` and positions `[M, 3]` (row-major,
/// Angstrom, any origin). Padding must be removed by the caller (use the real atom count).
///
/// # Errors
/// [`DatasetError::InvalidValue`] (path [`crate::IN_MEMORY`]) for an atomic number outside
/// H, C, N, O, F, a positions slice of another length than `3 M`, or a non-finite position.
pub fn molecule_stability(atomic_numbers: &[u8], positions: &[f32]) -> Result<MoleculeStability> {
    let m = atomic_numbers.len();
    let invalid = |object: &str, value: String, reason: &str| DatasetError::InvalidValue {
        path: crate::IN_MEMORY.into(),
        object: object.into(),
        value,
        reason: reason.into(),
    };
    if positions.len() != 3 * m {
        return Err(invalid(
            "positions",
            format!("{} values", positions.len()),
            "expected 3 per atom",
        ));
    }
    if let Some(v) = positions.iter().find(|v| !v.is_finite()) {
        return Err(invalid("positions", v.to_string(), "not finite"));
    }
    let elements: Vec<Element> = atomic_numbers
        .iter()
        .map(|&z| {
            Element::from_atomic_number(z)
                .ok_or_else(|| invalid("atomic number", z.to_string(), "not one of H, C, N, O, F"))
        })
        .collect::<Result<_>>()?;
    let mut valence_sum = vec![0u32; m];
    for i in 0..m {
        for j in i + 1..m {
            let d2: f64 = (0..3)
                .map(|k| {
                    let d = f64::from(positions[3 * i + k]) - f64::from(positions[3 * j + k]);
                    d * d
                })
                .sum();
            let order = u32::from(bond_order(elements[i], elements[j], d2.sqrt()));
            valence_sum[i] += order;
            valence_sum[j] += order;
        }
    }
    let stable_atoms = elements
        .iter()
        .zip(&valence_sum)
        .filter(|(e, &s)| e.valence() == s)
        .count();
    Ok(MoleculeStability {
        stable_atoms,
        n_atoms: m,
    })
}

/// Stability pooled over many molecules: atom stability over all atoms, molecule stability over
/// all molecules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StabilitySummary {
    /// Stable atoms over all molecules.
    pub stable_atoms: usize,
    /// Atoms over all molecules.
    pub atoms: usize,
    /// Molecules all of whose atoms are stable.
    pub stable_molecules: usize,
    /// Molecules.
    pub molecules: usize,
}

impl StabilitySummary {
    /// Adds one molecule.
    pub fn add(&mut self, m: MoleculeStability) {
        self.stable_atoms += m.stable_atoms;
        self.atoms += m.n_atoms;
        self.stable_molecules += usize::from(m.is_stable());
        self.molecules += 1;
    }

    /// Fraction of stable atoms (NaN when there are none).
    pub fn atom_fraction(&self) -> f64 {
        self.stable_atoms as f64 / self.atoms as f64
    }

    /// Fraction of stable molecules (NaN when there are none).
    pub fn molecule_fraction(&self) -> f64 {
        self.stable_molecules as f64 / self.molecules as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Element::*;

    #[test]
    fn bond_orders_follow_the_thresholds() {
        // C-C: single 154, double 134, triple 120 (pm).
        // Just above / below each threshold (1.64, 1.39, 1.23 A), clear of rounding.
        assert_eq!(bond_order(C, C, 1.64 + 1e-6), 0);
        assert_eq!(bond_order(C, C, 1.64 - 1e-6), 1);
        assert_eq!(bond_order(C, C, 1.39 + 1e-6), 1);
        assert_eq!(bond_order(C, C, 1.39 - 1e-6), 2);
        assert_eq!(bond_order(C, C, 1.23 + 1e-6), 2);
        assert_eq!(bond_order(C, C, 1.23 - 1e-6), 3);
        // N-O has no triple bond, H-C no double; the table is symmetric.
        assert_eq!(bond_order(O, N, 1.0), 2);
        assert_eq!(bond_order(C, H, 0.5), 1);
        assert_eq!(bond_order(H, C, 1.18), 1);
    }

    #[test]
    fn methane_is_stable_and_a_stretched_one_is_not() {
        let z = [6, 1, 1, 1, 1];
        let d = 1.09f32 / 3f32.sqrt();
        let mut x = vec![0.0, 0.0, 0.0, d, d, d, -d, -d, d, -d, d, -d, d, -d, -d];
        let s = molecule_stability(&z, &x).unwrap();
        assert_eq!((s.stable_atoms, s.n_atoms, s.is_stable()), (5, 5, true));
        x[3..6].iter_mut().for_each(|v| *v *= 2.0);
        let s = molecule_stability(&z, &x).unwrap();
        assert_eq!((s.stable_atoms, s.is_stable()), (3, false));
        assert!(molecule_stability(&[6, 2], &[0.0; 6]).is_err());
        assert!(molecule_stability(&[6], &[0.0; 2]).is_err());
    }
}
