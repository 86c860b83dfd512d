//! The training pipeline end to end on a small DW4 problem: files written, results readable,
//! configuration errors named, the test NLL taken with the best-validation parameters when later
//! epochs are worse, and a diverging run stopped with its last good checkpoint intact.

use datasets::{ParticleDataset, System};
use experiments::config::{GradientMethod, RunConfig};
use experiments::train::{files, train};
use experiments::{checkpoint, EnfModel, ExperimentError, RunResult};

mod common;

/// The small DW4 data set of these tests (seed 3).
fn small_dw4() -> ParticleDataset {
    common::small_dw4(3)
}

fn small_config(epochs: usize) -> RunConfig {
    let mut c = RunConfig::paper_cell(System::Dw4, 100, 0).unwrap();
    c.model.egnn.hidden_nf = 16;
    c.model.egnn.n_layers = 2;
    c.training.epochs = epochs;
    c.training.eval_every = 1;
    c.training.batch_size = 50;
    c.training.eval_batch_size = 100;
    c
}

#[test]
fn a_short_run_writes_its_files_and_a_readable_result() {
    let _rng = geometry::testing::seeded(0);
    let dir = tempfile::tempdir().unwrap();
    let ds = small_dw4();
    let config = small_config(2);
    let result = train(&config, &ds, dir.path(), false).unwrap();
    for f in [
        files::CONFIG,
        files::METRICS,
        files::BEST,
        files::LAST,
        files::RESULT,
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let read = RunResult::read(&dir.path().join(files::RESULT)).unwrap();
    assert_eq!(read, result);
    assert_eq!(read.train_steps, 4);
    assert!(read.test.nll.is_finite() && read.validation.nll.is_finite());
    assert_eq!(read.test.n_samples, 100);
    // The result names the data it was trained on: reusable on the same data, not on others.
    assert_eq!(read.data_digest, Some(ds.digest()));
    let path = dir.path().join(files::RESULT);
    read.check_data(&ds.digest(), &path).unwrap();
    let other = common::small_dw4(4);
    assert_ne!(other.digest(), ds.digest());
    assert!(matches!(
        read.check_data(&other.digest(), &path),
        Err(ExperimentError::Config { .. })
    ));
    let metrics = std::fs::read_to_string(dir.path().join(files::METRICS)).unwrap();
    let epochs: Vec<experiments::results::EpochMetrics> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(epochs.len(), 2);
    for e in &epochs {
        let median = e
            .median_seconds_per_step
            .expect("median step time recorded");
        assert!(median > 0.0 && median.is_finite(), "{e:?}");
    }
    // A line written before medians were recorded still reads.
    let old: experiments::results::EpochMetrics = serde_json::from_str(
        r#"{"epoch":3,"train_nll":9.5,"train_nfe_per_step":20.0,"seconds_per_step":0.1,"validation":null}"#,
    )
    .unwrap();
    assert_eq!(old.median_seconds_per_step, None);
    // Training from the initial flow (NLL about 17 nats on DW4) improves within two epochs.
    assert!(
        epochs[1].train_nll < epochs[0].train_nll,
        "{:?}",
        epochs.iter().map(|e| e.train_nll).collect::<Vec<_>>()
    );
    // The written configuration reads back to the same run.
    let again = RunConfig::from_file(&dir.path().join(files::CONFIG)).unwrap();
    assert_eq!(again, config);
    // The best checkpoint loads into a fresh model.
    let mut model = EnfModel::for_run(&config, tch::Device::Cpu).unwrap();
    let meta = checkpoint::load(&mut model.vs, &dir.path().join(files::BEST)).unwrap();
    assert_eq!(meta["epoch"], result.best_epoch.to_string());
}

/// Model selection: when an earlier epoch validated best, the test NLL is that epoch's, not the
/// last epoch's. A one-epoch run gives the parameters of epoch 1 and their test NLL; a two-epoch
/// run is then set up as if interrupted after that epoch, with epoch 1's recorded validation made
/// unbeatable, and resumed. Its result must name epoch 1 and repeat the one-epoch run's test NLL
/// exactly (the exact trace is deterministic), while the same two epochs without the doctored
/// record select epoch 2 and report another test NLL.
#[test]
fn the_test_nll_is_the_best_validation_epochs_not_the_last() {
    let _rng = geometry::testing::seeded(6);
    let dir = tempfile::tempdir().unwrap();
    let ds = small_dw4();
    let one = small_config(1);
    let two = small_config(2);
    assert_eq!(two.training.test_trace, flow::TraceEstimator::Exact);
    let first = train(&one, &ds, &dir.path().join("one"), false).unwrap();
    let plain = train(&two, &ds, &dir.path().join("plain"), false).unwrap();
    assert_eq!(
        plain.best_epoch, 2,
        "the undoctored run improves in epoch 2"
    );

    let run = dir.path().join("selected");
    std::fs::create_dir_all(&run).unwrap();
    for f in [files::LAST, files::BEST] {
        std::fs::copy(dir.path().join("one").join(f), run.join(f)).unwrap();
    }
    let text = std::fs::read_to_string(dir.path().join("one").join(files::METRICS)).unwrap();
    let mut epoch1: experiments::results::EpochMetrics =
        serde_json::from_str(text.lines().next().unwrap()).unwrap();
    epoch1.validation.as_mut().unwrap().nll = -1e3;
    let line = serde_json::to_string(&epoch1).unwrap() + "\n";
    std::fs::write(run.join(files::METRICS), line).unwrap();

    let selected = train(&two, &ds, &run, false).unwrap();
    assert_eq!(selected.best_epoch, 1);
    assert_eq!(selected.validation.nll, -1e3);
    assert_eq!(
        selected.train_steps, plain.train_steps,
        "epoch 2 was trained"
    );
    let last = checkpoint::read(&run.join(files::LAST)).unwrap();
    assert_eq!(last.metadata["epoch"], "2");
    assert_eq!(selected.test.nll, first.test.nll, "epoch 1's parameters");
    assert_ne!(selected.test.nll, plain.test.nll, "not epoch 2's");
}

/// `training.forward_mode_trace`: configurations written before the key existed read as the
/// default (forward mode); `false` builds a model whose flow takes the reference's
/// vector-Jacobian product, which trains the same model up to f32 round-off (one epoch of two
/// steps from the same initialisation: test NLLs within 1e-6 relative, 1e-9 measured), and is
/// another run.
#[test]
fn the_trace_mode_is_a_configuration_key() {
    let _rng = geometry::testing::seeded(7);
    let forward = small_config(1);
    let old: String = forward
        .to_toml()
        .lines()
        .filter(|l| !l.starts_with("forward_mode_trace"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!old.contains("forward_mode_trace"));
    let read = RunConfig::from_toml_str(&old, "old.toml").unwrap();
    assert!(read.training.forward_mode_trace);
    assert_eq!(read, forward);
    let mut reverse = forward.clone();
    reverse.training.forward_mode_trace = false;
    assert!(!forward.same_run(&reverse));
    let model = EnfModel::for_run(&reverse, tch::Device::Cpu).unwrap();
    assert!(!model.flow.forward_mode_trace);
    assert!(
        EnfModel::for_run(&forward, tch::Device::Cpu)
            .unwrap()
            .flow
            .forward_mode_trace
    );

    let dir = tempfile::tempdir().unwrap();
    let ds = small_dw4();
    let f = train(&forward, &ds, &dir.path().join("forward"), false).unwrap();
    let r = train(&reverse, &ds, &dir.path().join("reverse"), false).unwrap();
    let e = (f.test.nll - r.test.nll).abs() / f.test.nll.abs();
    assert!(e < 1e-6, "{} against {}: {e:e}", f.test.nll, r.test.nll);
}

#[test]
fn configuration_errors_name_the_key() {
    let text = RunConfig::paper_cell(System::Dw4, 1000, 0)
        .unwrap()
        .to_toml();
    let unknown = text.replace("epochs = 300", "epochs = 300\nepoch = 3");
    let e = RunConfig::from_toml_str(&unknown, "run.toml").unwrap_err();
    assert!(
        e.to_string().contains("epoch") && e.to_string().contains("run.toml"),
        "{e}"
    );
    let bad = text.replace("lr = 0.0005", "lr = -1.0");
    let e = RunConfig::from_toml_str(&bad, "run.toml").unwrap_err();
    assert!(
        matches!(&e, ExperimentError::Config { key, .. } if key == "training.lr"),
        "{e}"
    );
    let bad = text.replace("rtol = 0.0001", "rtol = -0.1");
    let e = RunConfig::from_toml_str(&bad, "run.toml").unwrap_err();
    assert!(
        matches!(&e, ExperimentError::Config { key, .. } if key == "solver"),
        "{e}"
    );
}

#[test]
fn a_chosen_data_file_is_read_as_it_is_but_the_default_one_must_have_current_settings() {
    let dir = tempfile::tempdir().unwrap();
    // Samples drawn with other settings than this version's defaults.
    let custom = dir.path().join("custom.h5");
    small_dw4().write(&custom).unwrap();
    let mut config = small_config(1);
    config.data.path = Some(custom.clone());
    let read = config.load_dataset(dir.path()).unwrap();
    assert_eq!(read, small_dw4());
    // The same file as the project's own data/dw4.h5 is refused, naming the settings, and is
    // left as it was.
    let default = dir.path().join("dw4.h5");
    std::fs::copy(&custom, &default).unwrap();
    config.data.path = None;
    match config.load_dataset(dir.path()) {
        Err(ExperimentError::Data(e @ datasets::DatasetError::SettingsMismatch { .. })) => {
            assert!(e.to_string().contains("n_chains 100 -> 1000"), "{e}");
        }
        other => panic!("expected a settings mismatch, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&default).unwrap(),
        std::fs::read(&custom).unwrap()
    );
}

#[test]
fn a_diverging_run_stops_with_a_clear_error_and_keeps_its_last_good_checkpoint() {
    let _rng = geometry::testing::seeded(1);
    let dir = tempfile::tempdir().unwrap();
    let ds = small_dw4();
    // A run whose first epoch is sane and whose later epochs use an absurd learning rate: the
    // first epoch's files, continued under a configuration with lr = 1e30 (parameters of that
    // size overflow f32). lr = 1e4 served until training took the trace by forward mode: with
    // it, that run trains 30 epochs with finite losses (bounded coordinate updates, saturated
    // gates), so it no longer diverges.
    let sane = dir.path().join("sane");
    train(&small_config(1), &ds, &sane, false).unwrap();
    let mut wild = small_config(30);
    wild.training.lr = 1e30;
    wild.solver.options.max_steps = 200;
    let run = dir.path().join("wild");
    std::fs::create_dir_all(&run).unwrap();
    for f in [files::METRICS, files::BEST, files::LAST] {
        std::fs::copy(sane.join(f), run.join(f)).unwrap();
    }
    std::fs::write(run.join(files::CONFIG), wild.to_toml()).unwrap();
    let e = train(&wild, &ds, &run, false).unwrap_err();
    let message = e.to_string();
    assert!(
        matches!(
            e,
            ExperimentError::NonFiniteLoss { .. }
                | ExperimentError::NonFiniteGradient { .. }
                | ExperimentError::Flow { .. }
        ),
        "unexpected error: {message}"
    );
    assert!(
        message.contains("epoch"),
        "the error should say where: {message}"
    );
    // Whatever was written is complete: the best checkpoint still loads.
    let best = run.join(files::BEST);
    let mut model = EnfModel::for_run(&wild, tch::Device::Cpu).unwrap();
    checkpoint::load(&mut model.vs, &best).unwrap();
    assert!(!datasets::atomic::partial_path(&best).exists());
}

/// The first `n` samples of `ds` as an f64 batch, with Rademacher probes for it.
fn f64_batch(ds: &ParticleDataset, n: usize) -> (experiments::data::TensorBatch, flow::Probes) {
    use flow::{Noise, TraceEstimator};
    use tch::Kind;
    let batch = datasets::Batch::gather(ds, &(0..n).collect::<Vec<_>>()).unwrap();
    let batch = experiments::data::TensorBatch::from_batch(&batch, Kind::Double, tch::Device::Cpu);
    let probes = TraceEstimator::Hutchinson(Noise::Rademacher).probes(
        &batch.positions.size(),
        &batch.masks.node,
        Kind::Double,
        tch::Device::Cpu,
    );
    (batch, probes)
}

#[test]
fn adjoint_training_gradients_equal_backprop_gradients() {
    use experiments::parallel::nll_gradients;
    use ode::OdeSolver;
    use tch::{Kind, Tensor};
    let _rng = geometry::testing::seeded(3);
    let ds = small_dw4();
    let config = small_config(1);
    // Tight tolerances: both methods then approximate the exact gradient to about 1e-8.
    let solver = OdeSolver::dopri5(1e-9, 1e-9);
    let mut model = EnfModel::new(&config.model, 2, solver.clone(), tch::Device::Cpu).unwrap();
    model.flow.adjoint.solver = solver;
    model.vs.set_kind(Kind::Double);
    let (batch, probes) = f64_batch(&ds, 20);
    let params = model.vs.trainable_variables();
    let run = |method, lambda| {
        nll_gradients(&model, &params, &batch, &probes, method, lambda, 2, "test").unwrap()
    };
    let compare = |g_a: &[Option<Tensor>], g_b: &[Option<Tensor>]| {
        let mut compared = 0;
        for (a, b) in g_a.iter().zip(g_b) {
            match (a, b) {
                (Some(a), Some(b)) => {
                    let scale = b.abs().max().double_value(&[]);
                    let err = (a - b).abs().max().double_value(&[]);
                    assert!(err <= 1e-5 * scale.max(1e-8), "{err} against {scale}");
                    compared += 1;
                }
                // A parameter the velocity does not use: zero by the adjoint, undefined by
                // backprop.
                (Some(a), None) => assert_eq!(a.abs().max().double_value(&[]), 0.0),
                _ => panic!("the adjoint left out a trainable parameter"),
            }
        }
        assert!(compared > 10, "{compared} parameters compared");
    };
    let (nll_b, g_b, nfe_b) = run(GradientMethod::Backprop, 0.0);
    let (nll_a, g_a, nfe_a) = run(GradientMethod::Adjoint, 0.0);
    assert!(
        (nll_a - nll_b).abs() < 1e-7 * nll_b.abs(),
        "{nll_a} vs {nll_b}"
    );
    compare(&g_a, &g_b);
    // The adjoint pays a backward solve on top of the forward one.
    assert!(nfe_a > nfe_b, "adjoint {nfe_a} NFE, backprop {nfe_b}");

    // With the ODE regulariser (Table 3's training loss) the two methods agree as well, the NLL
    // is unchanged, and the regulariser enters the gradient linearly in its weight:
    // g(2 lambda) - g(0) = 2 (g(lambda) - g(0)), with g(lambda) != g(0).
    let lambda = 0.05;
    let (nll_rb, g_rb, _) = run(GradientMethod::Backprop, lambda);
    let (nll_ra, g_ra, _) = run(GradientMethod::Adjoint, lambda);
    assert!(
        (nll_rb - nll_b).abs() < 1e-9 * nll_b.abs(),
        "{nll_rb} vs {nll_b}"
    );
    assert!(
        (nll_ra - nll_b).abs() < 1e-7 * nll_b.abs(),
        "{nll_ra} vs {nll_b}"
    );
    compare(&g_ra, &g_rb);
    let (_, g_2rb, _) = run(GradientMethod::Backprop, 2.0 * lambda);
    let mut largest_change = 0f64;
    for ((g0, g1), g2) in g_b.iter().zip(&g_rb).zip(&g_2rb) {
        if let (Some(g0), Some(g1), Some(g2)) = (g0, g1, g2) {
            let d1 = g1 - g0;
            let d2 = g2 - g0;
            let err = (&d2 - &d1 * 2.0).abs().max().double_value(&[]);
            let scale = d2.abs().max().double_value(&[]);
            assert!(err <= 1e-6 * scale.max(1e-12), "{err} against {scale}");
            largest_change = largest_change.max(scale);
        }
    }
    assert!(
        largest_change > 1e-6,
        "the regulariser left the gradients unchanged"
    );
}

#[test]
fn sharded_gradients_equal_whole_batch_gradients() {
    use experiments::parallel::nll_gradients;
    use ode::{Method, OdeSolver};
    use tch::Kind;
    let _rng = geometry::testing::seeded(2);
    let ds = small_dw4();
    let config = small_config(1);
    // A fixed-step solver makes every shard take the same steps as the whole batch, so the only
    // difference between 1 and 3 workers is the order of floating-point sums.
    let mut model = EnfModel::new(
        &config.model,
        2,
        OdeSolver::fixed(Method::Rk4, 0.25),
        tch::Device::Cpu,
    )
    .unwrap();
    model.vs.set_kind(Kind::Double);
    let (batch, probes) = f64_batch(&ds, 30);
    let params = model.vs.trainable_variables();
    let backprop = GradientMethod::Backprop;
    let (nll1, g1, _) = nll_gradients(
        &model,
        &params,
        &batch,
        &probes,
        backprop,
        0.0,
        1,
        "one worker",
    )
    .unwrap();
    let (nll3, g3, _) = nll_gradients(
        &model,
        &params,
        &batch,
        &probes,
        backprop,
        0.0,
        3,
        "three workers",
    )
    .unwrap();
    assert!((nll1 - nll3).abs() < 1e-9 * nll1.abs(), "{nll1} vs {nll3}");
    for (a, b) in g1.iter().zip(&g3) {
        match (a, b) {
            (Some(a), Some(b)) => assert!((a - b).abs().max().double_value(&[]) < 1e-10),
            (None, None) => {}
            _ => panic!("a gradient is defined for one split and not the other"),
        }
    }
}

#[test]
fn kernel_dynamics_train_through_the_same_pipeline() {
    use experiments::config::FlowMethod;
    let _rng = geometry::testing::seeded(4);
    let dir = tempfile::tempdir().unwrap();
    let ds = small_dw4();
    let mut config =
        RunConfig::paper_cell_for(FlowMethod::KernelDynamics, System::Dw4, 100, 0).unwrap();
    config.training.epochs = 3;
    config.training.eval_every = 1;
    config.training.batch_size = 50;
    config.training.eval_batch_size = 100;
    assert_eq!(config.training.lr, 1e-3);
    let result = train(&config, &ds, dir.path(), false).unwrap();
    assert_eq!(result.method, "Kernel dynamics");
    let read = RunResult::read(&dir.path().join(files::RESULT)).unwrap();
    assert_eq!(read, result);
    // The weights start at zero (the identity flow): training must have moved the density.
    let metrics = std::fs::read_to_string(dir.path().join(files::METRICS)).unwrap();
    let nll: Vec<f64> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["train_nll"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert!(nll[2] < nll[0], "train NLL per epoch: {nll:?}");
    assert!(result.test.nll.is_finite());
}
