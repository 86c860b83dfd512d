//! Where QM9 comes from: the PyPI wheel `qm9pack==1.0.3` (MIT licence), which carries all
//! 130,831 characterised QM9 molecules (Ramakrishnan et al. 2014) as CSV files. The wheel is
//! fetched once with `python3 -m pip download --no-deps` into the per-user cache shared by all
//! clones (`${XDG_CACHE_HOME:-$HOME/.cache}/enf-rs/qm9pack-1.0.3/`, the cache `cargo xtask` uses
//! for libtorch), verified against its pinned SHA-256, and read in place (no install).
//!
//! Offline machines: put the wheel file in that folder by hand; it is used when its digest matches.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{DatasetError, Result};

/// The pip requirement fetched.
pub const QM9PACK_REQUIREMENT: &str = "qm9pack==1.0.3";
/// File name of the wheel pip downloads.
pub const QM9PACK_WHEEL: &str = "qm9pack-1.0.3-py3-none-any.whl";
/// SHA-256 of the wheel (lowercase hex), as published on PyPI.
pub const QM9PACK_SHA256: &str = "1d88c2988007c6778e717ee3224cf511bd60e10732ebe3b7ed500ea5af05c9f0";
/// The wheel's CSV members holding the molecules, in the order they are read.
pub const QM9PACK_CSV_FILES: [&str; 3] = [
    "qm9pack/data/qm9_part1.csv",
    "qm9pack/data/qm9_part2.csv",
    "qm9pack/data/qm9_part3.csv",
];

/// One molecule as read from the CSV files.
#[derive(Debug, Clone, PartialEq)]
pub struct RawMolecule {
    /// The QM9 molecule index (the `Index` column, 1 … 133,885; gdb id).
    pub index: u32,
    /// Atomic numbers, one per atom (H 1, C 6, N 7, O 8, F 9).
    pub atomic_numbers: Vec<u8>,
    /// Positions in Angstrom, `[n_atoms][3]`, as written in the file (not centred).
    pub positions: Vec<[f64; 3]>,
}

/// The per-user cache root: `$XDG_CACHE_HOME/enf-rs` when that is an absolute path, else
/// `$HOME/.cache/enf-rs` (the same rule as `cargo xtask`).
///
/// # Errors
/// [`DatasetError::InvalidConfig`] when neither variable gives a usable path.
pub fn default_cache_dir() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from) {
        if x.is_absolute() {
            return Ok(x.join("enf-rs"));
        }
    }
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".cache").join("enf-rs")),
        _ => Err(DatasetError::InvalidConfig(
            "cannot locate the per-user cache: neither XDG_CACHE_HOME nor HOME is set".into(),
        )),
    }
}

/// SHA-256 of a file, lowercase hex.
///
/// # Errors
/// [`DatasetError::Io`] naming the file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let io = |source| DatasetError::Io {
        path: path.to_path_buf(),
        action: "reading the file to hash it".into(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex_digest(hasher))
}

/// The digest of `hasher` as lowercase hexadecimal (64 characters).
pub(crate) fn hex_digest(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks that `path` has the digest `expected`; on a mismatch the file is removed (a corrupt
/// download is never used) and the mismatch returned.
///
/// # Errors
/// [`DatasetError::ChecksumMismatch`], [`DatasetError::Io`].
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let found = sha256_file(path)?;
    if found == expected {
        return Ok(());
    }
    let _ = std::fs::remove_file(path);
    Err(DatasetError::ChecksumMismatch {
        path: path.to_path_buf(),
        expected: expected.into(),
        found,
    })
}

/// The verified qm9pack wheel in `cache_dir/qm9pack-1.0.3/`, downloaded first when absent or
/// when the file there does not match [`QM9PACK_SHA256`] (it is then removed and fetched again).
/// The download goes to a per-process temporary folder and is moved into place only once its
/// digest matches, so an interrupted download is never mistaken for the wheel.
///
/// # Errors
/// [`DatasetError::Download`] when `python3 -m pip download` cannot run or fails (no python3,
/// no network); [`DatasetError::ChecksumMismatch`] when the fresh download has another digest;
/// [`DatasetError::Io`] for file-system failures.
pub fn ensure_wheel(cache_dir: &Path) -> Result<PathBuf> {
    let dir = cache_dir.join("qm9pack-1.0.3");
    let wheel = dir.join(QM9PACK_WHEEL);
    if wheel.exists() && verify_sha256(&wheel, QM9PACK_SHA256).is_ok() {
        return Ok(wheel);
    }
    let tmp = dir.join(format!("download.partial.{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|source| DatasetError::Io {
        path: tmp.clone(),
        action: "creating the download folder".into(),
        source,
    })?;
    let result = download_into(&tmp).and_then(|downloaded| {
        verify_sha256(&downloaded, QM9PACK_SHA256)?;
        std::fs::rename(&downloaded, &wheel).map_err(|source| DatasetError::Io {
            path: wheel.clone(),
            action: "moving the verified wheel into the cache".into(),
            source,
        })
    });
    let _ = std::fs::remove_dir_all(&tmp);
    result.map(|()| wheel)
}

/// Runs `python3 -m pip download --no-deps` into `dir` and returns the wheel's path there.
fn download_into(dir: &Path) -> Result<PathBuf> {
    let python = std::env::var_os("ENF_PYTHON").unwrap_or_else(|| "python3".into());
    let fail = |reason: String| DatasetError::Download {
        what: QM9PACK_REQUIREMENT.into(),
        reason,
    };
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-input",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "-d",
        ])
        .arg(dir)
        .arg(QM9PACK_REQUIREMENT)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            fail(format!(
                "cannot run `{} -m pip` ({e}); install python3 with pip, set ENF_PYTHON, or put \
                 {QM9PACK_WHEEL} into the cache folder by hand",
                python.to_string_lossy()
            ))
        })?;
    if !status.success() {
        return Err(fail(format!(
            "pip exited with {status} (see its messages above)"
        )));
    }
    let wheel = dir.join(QM9PACK_WHEEL);
    if !wheel.exists() {
        return Err(fail(format!("pip succeeded but wrote no {QM9PACK_WHEEL}")));
    }
    Ok(wheel)
}

/// Reads every molecule of the wheel's CSV files ([`QM9PACK_CSV_FILES`]), in file order.
///
/// # Errors
/// [`DatasetError::Archive`] when the wheel is not a readable zip or lacks a CSV member;
/// [`DatasetError::Csv`] for a malformed record, naming the file, the record and the column.
pub fn read_wheel(wheel: &Path) -> Result<Vec<RawMolecule>> {
    let archive_err = |reason: String| DatasetError::Archive {
        path: wheel.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(wheel).map_err(|source| DatasetError::Io {
        path: wheel.to_path_buf(),
        action: "opening the wheel".into(),
        source,
    })?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| archive_err(format!("not a zip archive: {e}")))?;
    let mut molecules = Vec::with_capacity(131_000);
    for name in QM9PACK_CSV_FILES {
        let member = zip
            .by_name(name)
            .map_err(|e| archive_err(format!("member {name}: {e}")))?;
        molecules.extend(read_csv(member, name)?);
    }
    Ok(molecules)
}

/// Reads the molecules of one qm9pack CSV file. Columns used: `Index`, `N_atoms`, `Elements`
/// (a list literal such as `['C','H']`) and `XYZ_Ang` (a nested list such as `[[0.,1.2,-3],...]`,
/// Angstrom); numbers are parsed by Rust's float grammar, which accepts `0.` and `1e-05`.
///
/// # Errors
/// [`DatasetError::Csv`] naming `file`, the record and the column: a missing column, an
/// unparsable number, an unknown element symbol, an atom count that disagrees with the lists,
/// a non-finite coordinate, more than [`super::MAX_ATOMS`] atoms.
pub fn read_csv<R: Read>(reader: R, file: &str) -> Result<Vec<RawMolecule>> {
    let err = |record: u64, reason: String| DatasetError::Csv {
        file: file.into(),
        record,
        reason,
    };
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let headers = csv
        .headers()
        .map_err(|e| err(0, format!("cannot read the header: {e}")))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| err(0, format!("no column {name:?}")))
    };
    let (c_index, c_n, c_elements, c_xyz) = (
        column("Index")?,
        column("N_atoms")?,
        column("Elements")?,
        column("XYZ_Ang")?,
    );
    let mut out = Vec::new();
    for (k, record) in csv.records().enumerate() {
        let r = k as u64 + 1;
        let record = record.map_err(|e| err(r, format!("malformed CSV: {e}")))?;
        let field = |c: usize, name: &str| {
            record
                .get(c)
                .ok_or_else(|| err(r, format!("column {name:?} is missing")))
        };
        let index: u32 = field(c_index, "Index")?
            .trim()
            .parse()
            .map_err(|e| err(r, format!("column \"Index\": {e}")))?;
        let n_atoms: usize = field(c_n, "N_atoms")?
            .trim()
            .parse()
            .map_err(|e| err(r, format!("column \"N_atoms\": {e}")))?;
        let atomic_numbers = parse_elements(field(c_elements, "Elements")?)
            .map_err(|e| err(r, format!("column \"Elements\": {e}")))?;
        let positions = parse_xyz(field(c_xyz, "XYZ_Ang")?)
            .map_err(|e| err(r, format!("column \"XYZ_Ang\": {e}")))?;
        if atomic_numbers.len() != n_atoms || positions.len() != n_atoms {
            return Err(err(
                r,
                format!(
                    "N_atoms = {n_atoms} but Elements lists {} and XYZ_Ang {} atoms",
                    atomic_numbers.len(),
                    positions.len()
                ),
            ));
        }
        if n_atoms == 0 || n_atoms > super::MAX_ATOMS {
            return Err(err(
                r,
                format!("N_atoms = {n_atoms} is outside 1..={}", super::MAX_ATOMS),
            ));
        }
        out.push(RawMolecule {
            index,
            atomic_numbers,
            positions,
        });
    }
    Ok(out)
}

/// `['C','H',...]` → atomic numbers.
fn parse_elements(s: &str) -> std::result::Result<Vec<u8>, String> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| format!("{s:?} is not a list literal"))?;
    if inner.trim().is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(',')
        .map(|item| {
            let sym = item.trim().trim_matches(|c| c == '\'' || c == '"');
            super::Element::from_symbol(sym)
                .map(|e| e.atomic_number())
                .ok_or_else(|| format!("unknown element {sym:?} (QM9 has H, C, N, O, F)"))
        })
        .collect()
}

/// `[[x,y,z],[x,y,z],...]` → coordinates.
fn parse_xyz(s: &str) -> std::result::Result<Vec<[f64; 3]>, String> {
    let inner = s
        .trim()
        .strip_prefix("[[")
        .and_then(|t| t.strip_suffix("]]"))
        .ok_or_else(|| format!("{:?}... is not a nested list literal", prefix(s)))?;
    inner
        .split("],[")
        .map(|triple| {
            let v: Vec<f64> = triple
                .split(',')
                .map(|x| {
                    let x = x.trim();
                    match x.parse::<f64>() {
                        Ok(v) if v.is_finite() => Ok(v),
                        Ok(_) => Err(format!("coordinate {x:?} is not finite")),
                        Err(_) => Err(format!("{x:?} is not a number")),
                    }
                })
                .collect::<std::result::Result<_, _>>()?;
            <[f64; 3]>::try_from(v.as_slice())
                .map_err(|_| format!("[{triple}] does not have 3 coordinates"))
        })
        .collect()
}

fn prefix(s: &str) -> &str {
    s.char_indices().nth(40).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "XYZ_file,Index,SMILES,N_atoms,Elements,XYZ_Ang,Dipole_debye\n";

    #[test]
    fn reads_records_with_python_number_forms() {
        let csv = format!(
            "{HEADER}\"a.xyz\",7,\"O\",3,\"['O','H','H']\",\"[[0.,1.,-2.5e-1],[1,0,0],[-.5,0.25,3.]]\",0.\n"
        );
        let m = read_csv(csv.as_bytes(), "t.csv").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].index, 7);
        assert_eq!(m[0].atomic_numbers, vec![8, 1, 1]);
        assert_eq!(m[0].positions[0], [0.0, 1.0, -0.25]);
        assert_eq!(m[0].positions[2], [-0.5, 0.25, 3.0]);
    }

    #[test]
    fn malformed_records_name_file_record_and_column() {
        let cases = [
            ("\"a\",1,\"C\",1,\"['X']\",\"[[0,0,0]]\",1\n", "Elements"),
            ("\"a\",1,\"C\",1,\"['C']\",\"[[0,zero,0]]\",1\n", "XYZ_Ang"),
            ("\"a\",1,\"C\",1,\"['C']\",\"[[0,0]]\",1\n", "3 coordinates"),
            ("\"a\",1,\"C\",2,\"['C']\",\"[[0,0,0]]\",1\n", "N_atoms = 2"),
            (
                "\"a\",1,\"C\",1,\"['C']\",\"[[0,nan,0]]\",1\n",
                "not finite",
            ),
        ];
        for (row, what) in cases {
            let csv = format!("{HEADER}{row}");
            let e = read_csv(csv.as_bytes(), "t.csv").unwrap_err().to_string();
            assert!(e.contains("t.csv, record 1") && e.contains(what), "{e}");
        }
        let e = read_csv("Index,N_atoms\n1,2\n".as_bytes(), "t.csv").unwrap_err();
        assert!(e.to_string().contains("no column \"Elements\""), "{e}");
    }

    #[test]
    fn a_corrupt_file_is_removed_by_the_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(QM9PACK_WHEEL);
        std::fs::write(&p, b"truncated").unwrap();
        let e = verify_sha256(&p, QM9PACK_SHA256).unwrap_err();
        assert!(matches!(e, DatasetError::ChecksumMismatch { .. }), "{e}");
        assert!(!p.exists());
        // sha256("abc"), FIPS 180-2 appendix B.1.
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
