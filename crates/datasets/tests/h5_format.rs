//! HDF5 round trips, atomic writes and typed errors for malformed files.

mod common;

use std::path::Path;

use common::small_dataset;
use datasets::atomic::partial_path;
use datasets::{DatasetError, MetropolisConfig, ParticleDataset, Source, Splits, FORMAT_VERSION};

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Writes `ds`, then lets `edit` modify the file with the raw hdf5 API.
fn write_then_edit(path: &Path, ds: &ParticleDataset, edit: impl FnOnce(&hdf5::File)) {
    ds.write(path).unwrap();
    let f = hdf5::File::open_rw(path).unwrap();
    edit(&f);
    f.close().unwrap();
}

#[test]
fn round_trip_imported() {
    let dir = tmp();
    let path = dir.path().join("a.h5");
    let ds = small_dataset(10);
    ds.write(&path).unwrap();
    let back = ParticleDataset::read(&path).unwrap();
    assert_eq!(back, ds);
    assert!(!partial_path(&path).exists());
}

#[test]
fn round_trip_metropolis_provenance_and_no_energies() {
    let dir = tmp();
    let path = dir.path().join("m.h5");
    let mut ds = small_dataset(6);
    ds.energies = None;
    ds.source = Source::Metropolis {
        config: MetropolisConfig {
            n_chains: 3,
            n_samples: 6,
            burn_in: 7,
            thin: 2,
            proposal_std: 0.5,
            init_std: 1.25,
            seed: u64::MAX,
        },
        acceptance_rate: 0.0625,
    };
    ds.write(&path).unwrap();
    assert_eq!(ParticleDataset::read(&path).unwrap(), ds);

    let f = hdf5::File::open(&path).unwrap();
    let source: hdf5::types::VarLenUnicode = f.attr("source").unwrap().read_scalar().unwrap();
    assert_eq!(source.as_str(), "metropolis");
    assert_eq!(
        f.attr("format_version")
            .unwrap()
            .read_scalar::<u64>()
            .unwrap(),
        FORMAT_VERSION
    );
    assert_eq!(
        f.attr("seed").unwrap().read_scalar::<u64>().unwrap(),
        u64::MAX
    );
}

#[test]
fn round_trip_empty_splits_and_other_source() {
    let dir = tmp();
    let path = dir.path().join("e.h5");
    let mut ds = small_dataset(3);
    ds.splits = Splits {
        train: vec![2, 0, 0],
        val: vec![],
        test: vec![],
    };
    ds.source = Source::Other("hand-made".into());
    ds.write(&path).unwrap();
    assert_eq!(ParticleDataset::read(&path).unwrap(), ds);
}

#[test]
fn overwrite_is_atomic_and_invalid_data_never_reaches_disk() {
    let dir = tmp();
    let path = dir.path().join("b.h5");
    let good = small_dataset(5);
    good.write(&path).unwrap();

    let mut bad = small_dataset(7);
    bad.positions[3] = f32::NAN;
    let err = bad.write(&path).unwrap_err();
    assert!(
        matches!(&err, DatasetError::NonFinite { path: p, dataset, index: 3 } if p == &path && dataset == "/positions"),
        "{err}"
    );
    assert_eq!(ParticleDataset::read(&path).unwrap(), good);
    assert!(!partial_path(&path).exists());

    // A write that fails inside HDF5 (directory missing) leaves nothing behind either.
    let missing = dir.path().join("no/such/dir/c.h5");
    assert!(good.write(&missing).is_err());
    assert!(!partial_path(&missing).exists());

    // A stale partial file from a crashed writer does not disturb the next write.
    std::fs::write(partial_path(&path), b"stale").unwrap();
    small_dataset(9).write(&path).unwrap();
    assert_eq!(ParticleDataset::read(&path).unwrap().len(), 9);
    assert!(!partial_path(&path).exists());
}

#[test]
fn missing_file_is_io_error() {
    let dir = tmp();
    let path = dir.path().join("absent.h5");
    let err = ParticleDataset::read(&path).unwrap_err();
    assert!(
        matches!(&err, DatasetError::Io { path: p, .. } if p == &path),
        "{err}"
    );
}

#[test]
fn garbage_and_truncated_files_are_typed_errors() {
    let dir = tmp();
    let garbage = dir.path().join("garbage.h5");
    std::fs::write(
        &garbage,
        (0..5000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let err = ParticleDataset::read(&garbage).unwrap_err();
    eprintln!("garbage: {err}");
    assert!(
        matches!(&err, DatasetError::NotHdf5 { path, .. } if path == &garbage),
        "{err}"
    );

    let truncated = dir.path().join("truncated.h5");
    small_dataset(200).write(&truncated).unwrap();
    let bytes = std::fs::read(&truncated).unwrap();
    for keep in [0, 100, bytes.len() / 2, bytes.len() - 10] {
        std::fs::write(&truncated, &bytes[..keep]).unwrap();
        let err = ParticleDataset::read(&truncated).unwrap_err();
        eprintln!("truncated to {keep} of {} bytes: {err}", bytes.len());
        assert!(err.to_string().contains("truncated.h5"), "{err}");
    }
}

#[test]
fn missing_dataset_is_named() {
    let dir = tmp();
    let path = dir.path().join("m.h5");
    write_then_edit(&path, &small_dataset(4), |f| {
        f.group("splits").unwrap().unlink("val").unwrap()
    });
    let err = ParticleDataset::read(&path).unwrap_err();
    assert!(
        matches!(&err, DatasetError::MissingDataset { dataset, .. } if dataset == "/splits/val"),
        "{err}"
    );

    write_then_edit(&path, &small_dataset(4), |f| f.unlink("positions").unwrap());
    let err = ParticleDataset::read(&path).unwrap_err();
    assert!(
        matches!(&err, DatasetError::MissingDataset { dataset, .. } if dataset == "/positions"),
        "{err}"
    );
    assert!(err.to_string().contains("m.h5"));
}

#[test]
fn missing_attribute_is_named() {
    let dir = tmp();
    let path = dir.path().join("a.h5");
    write_then_edit(&path, &small_dataset(4), |f| {
        f.delete_attr("n_dims").unwrap()
    });
    let err = ParticleDataset::read(&path).unwrap_err();
    assert!(
        matches!(&err, DatasetError::MissingAttribute { attribute, .. } if attribute == "n_dims"),
        "{err}"
    );
}

#[test]
fn wrong_rank_or_shape_of_positions() {
    let dir = tmp();
    let path = dir.path().join("s.h5");
    // Rank 2 [N, 8] instead of [N, 4, 2].
    write_then_edit(&path, &small_dataset(4), |f| {
        f.unlink("positions").unwrap();
        f.new_dataset::<f32>()
            .shape([4, 8])
            .create("positions")
            .unwrap()
            .write_raw(&[0f32; 32])
            .unwrap();
    });
    let err = ParticleDataset::read(&path).unwrap_err();
    assert!(
        matches!(&err, DatasetError::WrongShape { object, found, .. } if object == "/positions" && found == &vec![4, 8]),
        "{err}"
    );

    // [N, 3, 2] while the attribute says 4 particles.
    write_then_edit(&path, &small_dataset(4), |f| {
        f.unlink("positions").unwrap();
        f.new_dataset::<f32>()
            .shape([4, 3, 2])
            .create("positions")
            .unwrap()
            .write_raw(&[0f32; 24])
            .unwrap();
    });
    let err = ParticleDataset::read(&path).unwrap_err();
    assert!(
        matches!(&err, DatasetError::WrongShape { object, .. } if object == "/positions"),
        "{err}"
    );

    // Energies of the wrong length.
    write_then_edit(&path, &small_dataset(4), |f| {
        f.unlink("energies").unwrap();
        f.new_dataset::<f64>()
            .shape([3])
            .create("energies")
            .unwrap()
            .write_raw(&[0f64; 3])
            .unwrap();
    });
    let err = ParticleDataset::read(&path).unwrap_err();
    assert!(
        matches!(&err, DatasetError::WrongShape { object, .. } if object == "/energies"),
        "{err}"
    );
}

#[test]
fn wrong_dtype_is_named() {
    let dir = tmp();
    let path = dir.path().join("t.h5");
    write_then_edit(&path, &small_dataset(3), |f| {
        f.unlink("positions").unwrap();
        f.new_dataset::<i32>()
            .shape([3, 4, 2])
            .create("positions")
            .unwrap()
            .write_raw(&[0i32; 24])
            .unwrap();
    });
    let err = ParticleDataset::read(&path).unwrap_err();
    assert!(
        matches!(&err, DatasetError::WrongDtype { object, found, .. } if object == "/positions" && found == "int32"),
        "{err}"
    );
}

#[test]
fn float64_positions_and_int64_splits_are_accepted() {
    // What h5py writes by default from numpy float64 / int64 arrays.
    let dir = tmp();
    let path = dir.path().join("h5py.h5");
    let ds = small_dataset(3);
    write_then_edit(&path, &ds, |f| {
        f.unlink("positions").unwrap();
        let p: Vec<f64> = ds.positions.iter().map(|&v| v as f64).collect();
        f.new_dataset::<f64>()
            .shape([3, 4, 2])
            .create("positions")
            .unwrap()
            .write_raw(&p)
            .unwrap();
        let g = f.group("splits").unwrap();
        g.unlink("train").unwrap();
        g.new_dataset::<i64>()
            .shape([1])
            .create("train")
            .unwrap()
            .write_raw(&[0i64])
            .unwrap();
    });
    let back = ParticleDataset::read(&path).unwrap();
    assert_eq!(back.positions, ds.positions);
    assert_eq!(back.splits.train, vec![0]);
}

#[test]
fn split_index_out_of_range_is_named() {
    let dir = tmp();
    let path = dir.path().join("r.h5");
    write_then_edit(&path, &small_dataset(4), |f| {
        let g = f.group("splits").unwrap();
        g.unlink("test").unwrap();
        g.new_dataset::<u64>()
            .shape([2])
            .create("test")
            .unwrap()
            .write_raw(&[3u64, 4])
            .unwrap();
    });
    let err = ParticleDataset::read(&path).unwrap_err();
    assert!(
        matches!(&err, DatasetError::SplitIndexOutOfRange { dataset, index: 4, position: 1, n_samples: 4, .. } if dataset == "/splits/test"),
        "{err}"
    );

    // Negative entries of a signed split are out of range too.
    write_then_edit(&path, &small_dataset(4), |f| {
        let g = f.group("splits").unwrap();
        g.unlink("val").unwrap();
        g.new_dataset::<i64>()
            .shape([1])
            .create("val")
            .unwrap()
            .write_raw(&[-1i64])
            .unwrap();
    });
    let err = ParticleDataset::read(&path).unwrap_err();
    assert!(
        matches!(&err, DatasetError::SplitIndexOutOfRange { dataset, .. } if dataset == "/splits/val"),
        "{err}"
    );
}

#[test]
fn nan_positions_in_file_are_named() {
    let dir = tmp();
    let path = dir.path().join("n.h5");
    write_then_edit(&path, &small_dataset(4), |f| {
        let mut p = vec![0f32; 32];
        p[13] = f32::NAN;
        f.dataset("positions").unwrap().write_raw(&p).unwrap();
    });
    let err = ParticleDataset::read(&path).unwrap_err();
    assert!(
        matches!(&err, DatasetError::NonFinite { dataset, index: 13, path: p } if dataset == "/positions" && p == &path),
        "{err}"
    );
}

#[test]
fn unsupported_format_version() {
    let dir = tmp();
    let path = dir.path().join("v.h5");
    write_then_edit(&path, &small_dataset(3), |f| {
        f.delete_attr("format_version").unwrap();
        f.new_attr::<u64>()
            .create("format_version")
            .unwrap()
            .write_scalar(&2u64)
            .unwrap();
    });
    let err = ParticleDataset::read(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DatasetError::UnsupportedFormatVersion {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn in_memory_validation() {
    let mut ds = small_dataset(3);
    ds.positions.pop();
    assert!(matches!(
        ds.validate(),
        Err(DatasetError::WrongShape { .. })
    ));
    let mut ds = small_dataset(3);
    ds.energies = Some(vec![0.0; 2]);
    assert!(matches!(
        ds.validate(),
        Err(DatasetError::WrongShape { .. })
    ));
    let mut ds = small_dataset(3);
    ds.splits.val.push(3);
    assert!(matches!(
        ds.validate(),
        Err(DatasetError::SplitIndexOutOfRange { .. })
    ));
    let mut ds = small_dataset(3);
    ds.n_dims = 0;
    assert!(matches!(
        ds.validate(),
        Err(DatasetError::InvalidValue { .. })
    ));
}
