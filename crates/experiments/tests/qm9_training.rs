//! A QM9 training run on the real data with a small model: it writes its files, and a run
//! stopped after 3 steps and resumed to 5 ends with the parameters of an uninterrupted 5-step
//! run (for the E-NF and for GNF-attention-augmentation, whose random rotations are keyed by
//! the step); a directory of another configuration is refused; a run with validation after
//! every epoch keeps its best epoch's parameters and resumes too.

use std::path::PathBuf;

use datasets::qm9::ensure_qm9;
use experiments::config::FlowMethod;
use experiments::qm9::run::{files, train_qm9, Qm9RunConfig};

fn config(steps: usize) -> Qm9RunConfig {
    config_of(FlowMethod::Enf, steps)
}

fn config_of(method: FlowMethod, steps: usize) -> Qm9RunConfig {
    let mut c = Qm9RunConfig {
        batch_size: 4,
        n_train: Some(16),
        steps,
        seed: 3,
        checkpoint_every: 1,
        ..Qm9RunConfig::default()
    };
    c.model.method = method;
    c.model.egnn.hidden_nf = 8;
    c.model.egnn.n_layers = 1;
    c.model.dequantizer_egnn.hidden_nf = 8;
    c.model.dequantizer_egnn.n_layers = 1;
    c
}

/// The QM9 data set of the workspace's data directory (made on first use). Training draws from
/// libtorch's global generator, so each test holds [`geometry::testing::seeded`]'s lock (which
/// also flushes denormals) while it trains.
fn qm9() -> datasets::qm9::Qm9Dataset {
    ensure_qm9(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/qm9.h5"),
        None,
    )
    .unwrap()
}

/// Asserts that two models hold the same parameters, bit for bit; `what` says which the second is.
fn assert_same_parameters(a: &tch::nn::VarStore, b: &tch::nn::VarStore, what: &str) {
    let (va, vb) = (a.variables(), b.variables());
    assert_eq!(va.len(), vb.len(), "{what}: other parameters");
    for (name, t) in &va {
        assert!(t.equal(&vb[name]), "{name} differs: {what}");
    }
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let _guard = geometry::testing::seeded(31);
    let ds = qm9();
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
    assert_same_parameters(&whole.vs, &resumed.vs, "after resuming");
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

#[test]
fn a_resumed_gnf_att_aug_run_draws_the_same_rotations() {
    let _guard = geometry::testing::seeded(32);
    let ds = qm9();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let aug = |steps| config_of(FlowMethod::GnfAttAug, steps);
    let (whole, _) = train_qm9(&aug(4), &ds, &a, |_, _| {}).unwrap();
    assert!(whole
        .vs
        .variables()
        .keys()
        .any(|k| k.starts_with("dynamics.gnn.")));
    train_qm9(&aug(2), &ds, &b, |_, _| {}).unwrap();
    let (resumed, _) = train_qm9(&aug(4), &ds, &b, |_, _| {}).unwrap();
    assert_same_parameters(&whole.vs, &resumed.vs, "after resuming");
    // The augmentation is real: the same run without rotations (GNF-att) ends elsewhere.
    let (plain, _) = train_qm9(&config_of(FlowMethod::GnfAtt, 4), &ds, &c, |_, _| {}).unwrap();
    let vc = plain.vs.variables();
    assert!(whole
        .vs
        .variables()
        .iter()
        .any(|(name, t)| !t.equal(&vc[name])));
}

/// The reference's protocol ([`experiments::qm9::protocol`]): a validated run keeps the
/// parameters of its best-validation epoch, and one stopped after an epoch (with a half-written
/// validation line) and re-run ends with the same validation history and parameters as an
/// uninterrupted one; other settings in its directory are refused.
#[test]
fn a_validated_run_keeps_its_best_epoch_and_resumes() {
    use experiments::qm9::protocol::{validated_files, ValidatedRunConfig};
    use experiments::qm9::train_with_validation;
    let _guard = geometry::testing::seeded(37);
    let ds = qm9();
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let validated = |epochs| ValidatedRunConfig {
        run: config_of(FlowMethod::GnfAtt, 0),
        epochs,
        n_val: Some(6),
        val_batch_size: 4,
    };
    let (best, whole) = train_with_validation(&validated(3), &ds, &a, |_, _| {}, |_| {}).unwrap();
    assert_eq!(whole.history.len(), 3);
    assert_eq!(whole.steps, 12, "16 molecules in batches of 4, 3 epochs");
    let min = whole
        .history
        .iter()
        .min_by(|x, y| x.nll.total_cmp(&y.nll))
        .unwrap();
    assert_eq!((whole.best_epoch, whole.best_val_nll), (min.epoch, min.nll));
    // The returned parameters are those of the best epoch: a plain run stopped there.
    let (plain, _) = train_qm9(
        &Qm9RunConfig {
            steps: 4 * whole.best_epoch,
            ..config_of(FlowMethod::GnfAtt, 0)
        },
        &ds,
        &c,
        |_, _| {},
    )
    .unwrap();
    assert_same_parameters(&plain.vs, &best.vs, "not the best epoch's parameters");

    // Stopped after one epoch, killed while writing the next line, then re-run for three.
    train_with_validation(&validated(1), &ds, &b, |_, _| {}, |_| {}).unwrap();
    let path = b.join(validated_files::VALIDATION);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"epoch\":2,\"ste");
    std::fs::write(&path, &text).unwrap();
    let mut validated_epochs = Vec::new();
    let (resumed, again) = train_with_validation(
        &validated(3),
        &ds,
        &b,
        |_, _| {},
        |v| validated_epochs.push(v.epoch),
    )
    .unwrap();
    assert_eq!(validated_epochs, [2, 3]);
    let key = |h: &[experiments::qm9::ValidationLine]| -> Vec<(usize, usize, f64, f64)> {
        h.iter()
            .map(|v| (v.epoch, v.step, v.nll, v.nll_std_err))
            .collect()
    };
    assert_eq!(key(&again.history), key(&whole.history));
    assert_same_parameters(&best.vs, &resumed.vs, "after resuming");
    // Other settings in that directory are refused, its files left alone.
    let other = ValidatedRunConfig {
        n_val: Some(5),
        ..validated(3)
    };
    let before = std::fs::read_to_string(&path).unwrap();
    assert!(train_with_validation(&other, &ds, &b, |_, _| {}, |_| {}).is_err());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    // Fewer epochs than it has validated are refused too (its best may be a later epoch).
    let err = train_with_validation(&validated(2), &ds, &b, |_, _| {}, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("records 3 validated epochs"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    // A plain run's directory of another configuration is refused before anything is written.
    let d = dir.path().join("d");
    train_qm9(&config_of(FlowMethod::GnfAttAug, 2), &ds, &d, |_, _| {}).unwrap();
    assert!(train_with_validation(&validated(3), &ds, &d, |_, _| {}, |_| {}).is_err());
    assert!(!d.join(validated_files::SETTINGS).exists());
    assert!(!d.join(validated_files::VALIDATION).exists());
}
