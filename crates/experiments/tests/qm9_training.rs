//! A QM9 training run on the real data with a small model: it writes its files, and a run
//! stopped after 3 steps and resumed to 5 ends with the parameters of an uninterrupted 5-step
//! run; a directory of another configuration is refused.

use std::path::PathBuf;

use datasets::qm9::ensure_qm9;
use experiments::qm9::run::{files, train_qm9, Qm9RunConfig};

fn config(steps: usize) -> Qm9RunConfig {
    let mut c = Qm9RunConfig {
        batch_size: 4,
        n_train: Some(16),
        steps,
        seed: 3,
        checkpoint_every: 1,
        ..Qm9RunConfig::default()
    };
    c.model.egnn.hidden_nf = 8;
    c.model.egnn.n_layers = 1;
    c.model.dequantizer_egnn.hidden_nf = 8;
    c.model.dequantizer_egnn.n_layers = 1;
    c
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    geometry::flush_denormals();
    let ds = ensure_qm9(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/qm9.h5"),
        None,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (whole, _) = train_qm9(&config(5), &ds, &a, |_, _| {}).unwrap();
    // Stopped after 3 steps, then the same run asked for 5: it resumes at step 4.
    train_qm9(&config(3), &ds, &b, |_, _| {}).unwrap();
    let mut first_step = None;
    let (resumed, _) = train_qm9(&config(5), &ds, &b, |s, _| {
        first_step.get_or_insert(s);
    })
    .unwrap();
    assert_eq!(first_step, Some(4));
    let metrics = std::fs::read_to_string(b.join(files::METRICS)).unwrap();
    assert_eq!(metrics.lines().count(), 5);
    let (va, vb) = (whole.vs.variables(), resumed.vs.variables());
    for (name, t) in &va {
        assert!(t.equal(&vb[name]), "{name} differs after resuming");
    }
    // Another configuration in that directory is refused, and the files are left alone.
    let other = Qm9RunConfig {
        seed: 4,
        ..config(5)
    };
    assert!(train_qm9(&other, &ds, &b, |_, _| {}).is_err());
    assert_eq!(
        std::fs::read_to_string(b.join(files::METRICS)).unwrap(),
        metrics
    );
}
