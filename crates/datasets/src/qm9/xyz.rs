//! Molecules as XYZ text (the de-facto exchange format that ASE, RDKit, Open Babel, Avogadro,
//! VMD and Jmol read): per molecule a line with the atom count, a comment line, then one line
//! `symbol x y z` per atom in Angstrom. Several molecules in one file are consecutive frames.

use std::fmt::Write as _;
use std::path::Path;

use super::Element;
use crate::error::{DatasetError, Result};

/// A molecule: atomic numbers and positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Molecule {
    /// Atomic numbers (H 1, C 6, N 7, O 8, F 9), `[M]`.
    pub atomic_numbers: Vec<u8>,
    /// Positions `[M, 3]` row-major, Angstrom.
    pub positions: Vec<f32>,
}

impl Molecule {
    /// Number of atoms.
    pub fn n_atoms(&self) -> usize {
        self.atomic_numbers.len()
    }

    /// Checks that there are 3 positions per atom; `k` numbers the molecule in the error.
    ///
    /// # Errors
    /// [`DatasetError::InvalidValue`] naming molecule `k` otherwise.
    pub fn check_shape(&self, k: usize) -> Result<()> {
        if self.positions.len() == 3 * self.n_atoms() {
            return Ok(());
        }
        Err(DatasetError::InvalidValue {
            path: crate::IN_MEMORY.into(),
            object: format!("molecule {k}"),
            value: format!(
                "{} positions for {} atoms",
                self.positions.len(),
                self.n_atoms()
            ),
            reason: "expected 3 per atom".into(),
        })
    }

    /// Stability of the molecule ([`super::molecule_stability`]).
    ///
    /// # Errors
    /// As [`super::molecule_stability`] (non-finite positions, unknown elements).
    pub fn stability(&self) -> Result<super::MoleculeStability> {
        super::molecule_stability(&self.atomic_numbers, &self.positions)
    }
}

/// The XYZ text of `molecules`, frame `k` with comment `comment(k)`.
///
/// # Errors
/// [`DatasetError::InvalidValue`] for an atomic number outside H, C, N, O, F or positions not
/// `3 M` long.
pub fn to_xyz(molecules: &[Molecule], comment: impl Fn(usize) -> String) -> Result<String> {
    let mut out = String::new();
    for (k, m) in molecules.iter().enumerate() {
        m.check_shape(k)?;
        let _ = writeln!(out, "{}", m.n_atoms());
        let _ = writeln!(out, "{}", comment(k).replace('\n', " "));
        for (a, &z) in m.atomic_numbers.iter().enumerate() {
            let e = Element::from_atomic_number(z).ok_or_else(|| DatasetError::InvalidValue {
                path: crate::IN_MEMORY.into(),
                object: format!("molecule {k}, atom {a}"),
                value: z.to_string(),
                reason: "not one of H, C, N, O, F".into(),
            })?;
            let p = &m.positions[3 * a..3 * a + 3];
            let _ = writeln!(
                out,
                "{:<2} {:>12.6} {:>12.6} {:>12.6}",
                e.symbol(),
                p[0],
                p[1],
                p[2]
            );
        }
    }
    Ok(out)
}

/// Writes `molecules` to the XYZ file `path` (one frame each) atomically.
///
/// # Errors
/// As [`to_xyz`]; [`DatasetError::Io`] naming the file.
pub fn write_xyz(
    path: impl AsRef<Path>,
    molecules: &[Molecule],
    comment: impl Fn(usize) -> String,
) -> Result<()> {
    let text = to_xyz(molecules, comment)?;
    crate::atomic::write_atomic(path.as_ref(), text.as_bytes())
}

/// Parses XYZ text (one or more frames) into molecules.
///
/// # Errors
/// [`DatasetError::InvalidValue`] (object `line <n>`) for a malformed count, atom line, unknown
/// element or a truncated frame.
pub fn parse_xyz(text: &str) -> Result<Vec<Molecule>> {
    let bad = |line: usize, value: &str, reason: &str| DatasetError::InvalidValue {
        path: crate::IN_MEMORY.into(),
        object: format!("line {}", line + 1),
        value: value.into(),
        reason: reason.into(),
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        let n: usize = lines[i]
            .trim()
            .parse()
            .map_err(|_| bad(i, lines[i], "expected the atom count"))?;
        if n.checked_add(i + 2).is_none_or(|end| end > lines.len()) {
            return Err(bad(i, lines[i], "the frame is truncated"));
        }
        let mut m = Molecule {
            atomic_numbers: Vec::with_capacity(n),
            positions: Vec::with_capacity(3 * n),
        };
        for (j, line) in lines[i + 2..i + 2 + n].iter().enumerate() {
            let at = i + 2 + j;
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                return Err(bad(at, line, "expected `symbol x y z`"));
            }
            let e = Element::from_symbol(f[0]).ok_or_else(|| bad(at, f[0], "unknown element"))?;
            m.atomic_numbers.push(e.atomic_number());
            for v in &f[1..4] {
                m.positions
                    .push(v.parse().map_err(|_| bad(at, v, "not a number"))?);
            }
        }
        out.push(m);
        i += 2 + n;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xyz_round_trip_and_errors() {
        let water = Molecule {
            atomic_numbers: vec![8, 1, 1],
            positions: vec![
                0.0, 0.0, 0.1173, 0.0, 0.7572, -0.4692, 0.0, -0.7572, -0.4692,
            ],
        };
        let text = to_xyz(&[water.clone(), water.clone()], |k| format!("frame {k}")).unwrap();
        assert!(text.starts_with("3\nframe 0\nO "));
        let back = parse_xyz(&text).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1], water);
        assert!(parse_xyz("3\nc\nO 0 0 0\n").is_err());
        assert!(parse_xyz("1\nc\nXe 0 0 0\n").is_err());
        let bad = Molecule {
            atomic_numbers: vec![2],
            positions: vec![0.0; 3],
        };
        assert!(to_xyz(&[bad], |_| String::new()).is_err());
    }
}
