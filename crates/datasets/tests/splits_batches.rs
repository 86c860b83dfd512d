//! The paper's split rule and the mini-batch loader.

mod common;

use common::small_dataset;
use datasets::{Batch, DatasetError, MiniBatches, SplitName, Splits};

#[test]
fn tail_split_rule() {
    let s = Splits::tail(102_000, 1000, 1000).unwrap();
    assert_eq!(s.train.len(), 100_000);
    assert_eq!((s.train[0], s.train[99_999]), (0, 99_999));
    assert_eq!((s.val[0], s.val[999]), (100_000, 100_999));
    assert_eq!((s.test[0], s.test[999]), (101_000, 101_999));
    assert_eq!(
        s.first_train(100).unwrap(),
        &(0..100).collect::<Vec<_>>()[..]
    );
    assert!(matches!(
        s.first_train(100_001),
        Err(DatasetError::TooFewSamples {
            needed: 100_001,
            available: 100_000,
            ..
        })
    ));
    assert!(matches!(
        Splits::tail(2000, 1000, 1000),
        Err(DatasetError::TooFewSamples {
            needed: 2001,
            available: 2000,
            ..
        })
    ));
    assert_eq!(Splits::tail(3, 1, 1).unwrap().train, vec![0]);
    assert!(Splits::tail(usize::MAX, usize::MAX, 1).is_err());
    assert!(Splits::tail(10, usize::MAX, 1).is_err());
}

#[test]
fn batches_are_centred_with_full_masks() {
    let ds = small_dataset(6);
    let b = Batch::gather(&ds, &[4, 1, 4]).unwrap();
    assert_eq!((b.batch_size, b.n_particles, b.n_dims), (3, 4, 2));
    assert_eq!(b.positions.len(), 3 * 8);
    assert_eq!(b.node_mask, vec![1.0; 12]);
    for s in 0..3 {
        for k in 0..2 {
            let sum: f32 = (0..4).map(|i| b.positions[s * 8 + i * 2 + k]).sum();
            assert!(sum.abs() < 1e-5, "{sum}");
        }
    }
    // small_dataset: x[s, i, k] = s + 0.25 i - 0.5 k, so centred x[i, k] = 0.25 (i - 1.5).
    let expected: Vec<f32> = (0..8).map(|f| 0.25 * ((f / 2) as f32 - 1.5)).collect();
    assert_eq!(&b.positions[..8], &expected[..]);
    assert_eq!(&b.positions[16..], &b.positions[..8]);

    assert!(matches!(
        Batch::gather(&ds, &[6]),
        Err(DatasetError::IndexOutOfRange {
            index: 6,
            n_samples: 6
        })
    ));
    let val = ds.split_batch(SplitName::Val).unwrap();
    assert_eq!(val.batch_size, 1);
    assert_eq!(Batch::gather(&ds, &[]).unwrap().batch_size, 0);
}

#[test]
fn epochs_are_seeded_permutations() {
    let ds = small_dataset(20);
    let idx: Vec<usize> = (0..10).collect();
    let mb = MiniBatches::new(idx.clone(), 4, 42).unwrap();
    assert_eq!(mb.n_batches(), 3);
    let sizes: Vec<usize> = mb.epoch(&ds, 0).unwrap().map(|b| b.batch_size).collect();
    assert_eq!(sizes, vec![4, 4, 2]);
    assert_eq!(mb.epoch(&ds, 0).unwrap().len(), 3);

    let o0 = mb.epoch_order(0);
    let mut sorted = o0.clone();
    sorted.sort();
    assert_eq!(sorted, idx);
    assert_eq!(
        o0,
        MiniBatches::new(idx.clone(), 4, 42).unwrap().epoch_order(0)
    );
    assert_ne!(o0, mb.epoch_order(1));
    assert_ne!(
        o0,
        MiniBatches::new(idx.clone(), 4, 43).unwrap().epoch_order(0)
    );

    // The batches hold the samples of the epoch order, in that order.
    let first = mb.epoch(&ds, 0).unwrap().next().unwrap();
    assert_eq!(first, Batch::gather(&ds, &o0[..4]).unwrap());

    let dropped = MiniBatches::new(idx.clone(), 4, 42)
        .unwrap()
        .drop_last(true);
    assert_eq!(dropped.n_batches(), 2);
    assert_eq!(dropped.epoch(&ds, 0).unwrap().count(), 2);

    let ordered = MiniBatches::new(idx.clone(), 4, 42).unwrap().shuffle(false);
    assert_eq!(ordered.epoch_order(5), idx);
}

#[test]
fn loader_errors() {
    assert!(matches!(
        MiniBatches::new(vec![0], 0, 0),
        Err(DatasetError::InvalidConfig(_))
    ));
    let ds = small_dataset(3);
    let mb = MiniBatches::new(vec![0, 5], 1, 0).unwrap();
    assert!(matches!(
        mb.epoch(&ds, 0),
        Err(DatasetError::IndexOutOfRange {
            index: 5,
            n_samples: 3
        })
    ));
}
