//! Create-or-load of data sets.

mod common;

use datasets::{
    default_config, default_dw4_config, ensure_dataset_with, generate, DatasetError,
    MetropolisConfig, ParticleDataset, Source, System,
};

fn small_config() -> MetropolisConfig {
    MetropolisConfig {
        n_chains: 10,
        n_samples: 2100,
        burn_in: 100,
        thin: 5,
        ..default_dw4_config()
    }
}

#[test]
fn generates_writes_then_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/dw4.h5");
    let made = ensure_dataset_with(&path, System::Dw4, &small_config()).unwrap();
    assert_eq!(made.len(), 2100);
    assert_eq!(
        (
            made.splits.train.len(),
            made.splits.val.len(),
            made.splits.test.len()
        ),
        (100, 1000, 1000)
    );
    assert!(matches!(&made.source, Source::Metropolis { config, .. } if config == &small_config()));
    assert_eq!(ParticleDataset::read(&path).unwrap(), made);
    // The digest survives the file and sees the samples and the split, not the provenance.
    let digest = made.digest();
    assert_eq!(digest.len(), 64);
    assert_eq!(ParticleDataset::read(&path).unwrap().digest(), digest);
    let mut moved = made.clone();
    moved.positions[0] += 1e-3;
    assert_ne!(moved.digest(), digest);
    let mut resplit = made.clone();
    resplit.splits.train.swap(0, 1);
    assert_ne!(resplit.digest(), digest);
    let relabelled = ParticleDataset {
        source: Source::Other("elsewhere".into()),
        ..made.clone()
    };
    assert_eq!(relabelled.digest(), digest);

    // A second call with the same settings loads the file.
    assert_eq!(
        ensure_dataset_with(&path, System::Dw4, &small_config()).unwrap(),
        made
    );

    // Samples drawn with other settings (an earlier version's defaults) are an error naming
    // the settings that differ, and the file stays untouched.
    let before = std::fs::read(&path).unwrap();
    let other = MetropolisConfig {
        seed: 99,
        burn_in: 2000,
        ..small_config()
    };
    match ensure_dataset_with(&path, System::Dw4, &other) {
        Err(e @ DatasetError::SettingsMismatch { .. }) => {
            let message = e.to_string();
            assert!(
                message.contains("burn_in 100 -> 2000") && message.contains("seed 20210521 -> 99"),
                "{message}"
            );
            assert!(!message.contains("thin"), "{message}");
        }
        other => panic!("expected a settings mismatch, got {other:?}"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // read_dataset takes the file whatever drew it; of another system it refuses.
    assert_eq!(datasets::read_dataset(&path, System::Dw4).unwrap(), made);
    assert!(matches!(
        datasets::read_dataset(&path, System::Lj13),
        Err(DatasetError::SystemMismatch { .. })
    ));

    // A file of another system is an error and stays untouched.
    assert!(matches!(
        ensure_dataset_with(&path, System::Lj13, &other),
        Err(DatasetError::SystemMismatch { .. })
    ));
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn imported_samples_are_used_whatever_the_requested_settings() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dw4.h5");
    let generated = generate(System::Dw4, &small_config()).unwrap();
    let imported = ParticleDataset {
        source: Source::Imported {
            file_name: "train_split_DW4.npy".into(),
        },
        ..generated
    };
    imported.write(&path).unwrap();
    assert_eq!(
        ensure_dataset_with(&path, System::Dw4, &default_dw4_config()).unwrap(),
        imported
    );
}

#[test]
fn corrupt_file_is_regenerated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dw4.h5");
    std::fs::write(&path, b"half a file").unwrap();
    let made = ensure_dataset_with(&path, System::Dw4, &small_config()).unwrap();
    assert_eq!(ParticleDataset::read(&path).unwrap(), made);
    assert_eq!(made, generate(System::Dw4, &small_config()).unwrap());
}

#[test]
fn default_settings() {
    let c = default_dw4_config();
    assert_eq!(c.n_samples, 102_000);
    assert_eq!(c.proposal_std, 0.5);
    let l = default_config(System::Lj13).unwrap();
    assert_eq!(l.n_samples, 12_000);
    assert_eq!(l.proposal_std, 0.05);
    assert!(l.validate().is_ok() && c.validate().is_ok());
}
