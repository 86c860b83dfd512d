//! Import of `.npy` sample files.

mod common;

use std::path::Path;

use datasets::{read_npy_positions, DatasetError, ParticleDataset, Source, System};
use npyz::WriterBuilder;

fn write_npy<T: npyz::AutoSerialize + Copy>(
    path: &Path,
    shape: &[u64],
    data: &[T],
    order: npyz::Order,
) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .order(order)
        .writer(std::io::BufWriter::new(file))
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
}

#[test]
fn imports_reference_dw4_file() {
    let Some(path) = common::reference_file("train_split_DW4.npy") else {
        return;
    };
    let p = read_npy_positions(&path, 4, 2).unwrap();
    assert_eq!(p.len(), 100_000 * 8);
    let ds = ParticleDataset::import_npy(&path, System::Dw4).unwrap();
    assert_eq!(ds.len(), 100_000);
    assert_eq!(
        (
            ds.splits.train.len(),
            ds.splits.val.len(),
            ds.splits.test.len()
        ),
        (98_000, 1000, 1000)
    );
    assert_eq!(ds.splits.test[999], 99_999);
    assert_eq!(
        ds.source,
        Source::Imported {
            file_name: "train_split_DW4.npy".into()
        }
    );
    let e = ds.energies.as_ref().unwrap();
    let mean = e.iter().sum::<f64>() / e.len() as f64;
    eprintln!("reference train_split_DW4.npy: mean energy {mean:.4}");
    assert!((mean + 22.45).abs() < 0.1, "{mean}");
}

#[test]
fn float64_2d_and_3d_and_fortran_order_agree() {
    let dir = tempfile::tempdir().unwrap();
    let c: Vec<f64> = (0..24).map(|v| v as f64 * 0.5).collect(); // 3 samples x 8
    let p2 = dir.path().join("c2.npy");
    write_npy(&p2, &[3, 8], &c, npyz::Order::C);
    let p3 = dir.path().join("c3.npy");
    write_npy(&p3, &[3, 4, 2], &c, npyz::Order::C);
    let expected: Vec<f32> = c.iter().map(|&v| v as f32).collect();
    assert_eq!(read_npy_positions(&p2, 4, 2).unwrap(), expected);
    assert_eq!(read_npy_positions(&p3, 4, 2).unwrap(), expected);

    // Fortran order: the same logical [3, 8] array, stored column-major.
    let mut f = vec![0f32; 24];
    for r in 0..3 {
        for j in 0..8 {
            f[r + 3 * j] = c[r * 8 + j] as f32;
        }
    }
    let pf = dir.path().join("f2.npy");
    write_npy(&pf, &[3, 8], &f, npyz::Order::Fortran);
    assert_eq!(read_npy_positions(&pf, 4, 2).unwrap(), expected);

    // Fortran [3, 4, 2]: element (r, i, k) at r + 3 (i + 4 k).
    let mut f3 = vec![0f32; 24];
    for r in 0..3 {
        for i in 0..4 {
            for k in 0..2 {
                f3[r + 3 * (i + 4 * k)] = c[r * 8 + i * 2 + k] as f32;
            }
        }
    }
    let pf3 = dir.path().join("f3.npy");
    write_npy(&pf3, &[3, 4, 2], &f3, npyz::Order::Fortran);
    assert_eq!(read_npy_positions(&pf3, 4, 2).unwrap(), expected);
}

#[test]
fn wrong_shape_dtype_and_unreadable_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let shape = dir.path().join("shape.npy");
    write_npy(&shape, &[2, 7], &[0f32; 14], npyz::Order::C);
    let err = read_npy_positions(&shape, 4, 2).unwrap_err();
    assert!(
        matches!(&err, DatasetError::WrongShape { path, found, .. } if path == &shape && found == &vec![2, 7]),
        "{err}"
    );
    // LJ13 shape asked of a DW4 file.
    write_npy(&shape, &[2, 8], &[0f32; 16], npyz::Order::C);
    assert!(matches!(
        read_npy_positions(&shape, 13, 3),
        Err(DatasetError::WrongShape { .. })
    ));

    let ints = dir.path().join("ints.npy");
    write_npy(&ints, &[2, 8], &[0i32; 16], npyz::Order::C);
    let err = read_npy_positions(&ints, 4, 2).unwrap_err();
    assert!(
        matches!(&err, DatasetError::Npy { path, .. } if path == &ints),
        "{err}"
    );
    eprintln!("int32 file: {err}");

    let garbage = dir.path().join("garbage.npy");
    std::fs::write(&garbage, b"definitely not numpy").unwrap();
    assert!(matches!(
        read_npy_positions(&garbage, 4, 2),
        Err(DatasetError::Npy { .. })
    ));

    let truncated = dir.path().join("truncated.npy");
    write_npy(&truncated, &[100, 8], &[1f32; 800], npyz::Order::C);
    let bytes = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 40]).unwrap();
    let err = read_npy_positions(&truncated, 4, 2).unwrap_err();
    assert!(matches!(err, DatasetError::Npy { .. }), "{err}");

    let missing = dir.path().join("missing.npy");
    assert!(matches!(
        read_npy_positions(&missing, 4, 2),
        Err(DatasetError::Io { .. })
    ));

    let nan = dir.path().join("nan.npy");
    let mut v = [0f32; 16];
    v[9] = f32::NAN;
    write_npy(&nan, &[2, 8], &v, npyz::Order::C);
    assert!(matches!(
        read_npy_positions(&nan, 4, 2),
        Err(DatasetError::NonFinite { index: 9, .. })
    ));
}

#[test]
fn import_needs_enough_samples_for_the_tail_split() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.npy");
    write_npy(&small, &[10, 8], &[0.5f32; 80], npyz::Order::C);
    assert!(matches!(
        ParticleDataset::import_npy(&small, System::Dw4),
        Err(DatasetError::TooFewSamples { .. })
    ));
}
