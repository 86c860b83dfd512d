//! The authors' pretrained QM9 checkpoint (../shared/data/pretrained-qm9) imported into the Rust
//! model: every tensor used, the split first edge layer reassembles the original, the
//! Hutchinson estimate of log p averages to the exact-trace value, and sampling works.

use std::path::PathBuf;

use egnn::Masks;
use experiments::checkpoint;
use experiments::qm9::{load_pretrained, PretrainedFiles, Qm9Batch, Qm9Model};
use flow::{GradientMode, NodeCountDistribution, Noise, Probes, TraceEstimator};
use ode::OdeSolver;
use tch::{Device, Kind, Tensor};

fn pretrained_dir() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/pretrained-qm9");
    if p.join("flow.safetensors").exists() {
        Some(p)
    } else {
        eprintln!("SKIPPED: pretrained checkpoint {} not found", p.display());
        None
    }
}

fn model(dir: &std::path::Path) -> Qm9Model {
    // p(M) is irrelevant to these checks; a flat histogram over 1..=29 atoms.
    let nodes = NodeCountDistribution::from_histogram(&[1; 30]).unwrap();
    load_pretrained(
        &PretrainedFiles::in_dir(dir),
        nodes,
        OdeSolver::dopri5(1e-4, 1e-4),
        Device::Cpu,
    )
    .unwrap()
}

#[test]
fn every_tensor_is_imported_and_the_split_edge_layer_reassembles() {
    let Some(dir) = pretrained_dir() else { return };
    let model = model(&dir);
    let files = PretrainedFiles::in_dir(&dir);
    let flow = checkpoint::read(&files.flow).unwrap().tensors;
    let deq = checkpoint::read(&files.dequantizer).unwrap().tensors;
    // All parameters of both files but the two integration-interval buffers.
    let in_files: i64 = flow
        .iter()
        .chain(deq.iter())
        .filter(|(k, _)| !k.ends_with("int_time"))
        .map(|(_, t)| t.numel() as i64)
        .sum();
    assert_eq!(model.n_parameters(), in_files);
    let vars = model.vs.variables();
    for (ours, theirs) in [
        (
            "dynamics.egnn.layers.3.edge_mlp.linear_in",
            &flow["transformations.1.odefunc.dynamics.egnn.gcl_3.edge_mlp.0.weight"],
        ),
        (
            "dequantizer.egnn.layers.2.edge_mlp.linear_in",
            &deq["net_fn.egnn.gcl_2.edge_mlp.0.weight"],
        ),
    ] {
        let parts: Vec<&Tensor> = ["source", "target", "scalars"]
            .iter()
            .map(|p| &vars[&format!("{ours}.{p}.weight")])
            .collect();
        assert!(Tensor::cat(&parts, 1).equal(theirs), "{ours}");
    }
}

/// Methane at its QM9 geometry (molecule 1), centred.
fn methane() -> Qm9Batch {
    let x = Tensor::from_slice(&[
        -0.0127f32, 1.0858, 0.0080, 0.0022, -0.0060, 0.0020, 1.0117, 1.4638, 0.0003, -0.5408,
        1.4475, -0.8766, -0.5238, 1.4379, 0.9064,
    ])
    .view([1, 5, 3]);
    let node = Tensor::ones([1, 5], (Kind::Float, Device::Cpu));
    let types = Tensor::from_slice(&[1i64, 0, 0, 0, 0]);
    Qm9Batch {
        x: geometry::centre(&x, None).unwrap(),
        one_hot: types.one_hot(5).to_kind(Kind::Float).unsqueeze(0),
        charges: Tensor::from_slice(&[6.0f32, 1.0, 1.0, 1.0, 1.0]).view([1, 5, 1]),
        masks: Masks::from_node_mask(&node),
        rows: vec![0],
    }
}

#[test]
fn hutchinson_estimates_average_to_the_exact_trace_value() {
    let Some(dir) = pretrained_dir() else { return };
    let _guard = geometry::testing::seeded(5);
    let model = model(&dir);
    let one = methane();
    let noise = model
        .dequantizer
        .draw_noise(&one.masks.node, Kind::Float)
        .unwrap();
    let exact = model
        .log_likelihood_with(&one, &noise, Probes::Exact, GradientMode::NoGrad)
        .unwrap();
    let exact = exact.log_p.double_value(&[0]);

    // 64 copies of the molecule, one Gaussian probe each, the same dequantization noise.
    let k = 64;
    let copies = Qm9Batch {
        x: one.x.repeat([k, 1, 1]),
        one_hot: one.one_hot.repeat([k, 1, 1]),
        charges: one.charges.repeat([k, 1, 1]),
        masks: one.masks.repeat(k),
        rows: vec![0; k as usize],
    };
    let probes = TraceEstimator::Hutchinson(Noise::Gaussian).probes(
        &[k, 5, 9],
        &copies.masks.node,
        Kind::Float,
        Device::Cpu,
    );
    let est = model
        .log_likelihood_with(
            &copies,
            &noise.repeat([k, 1, 1]),
            probes,
            GradientMode::NoGrad,
        )
        .unwrap()
        .log_p
        .to_kind(Kind::Double);
    let mean = est.mean(Kind::Double).double_value(&[]);
    let se = est.std(true).double_value(&[]) / (k as f64).sqrt();
    assert!(exact.is_finite() && se > 0.0);
    // 4 standard errors of the 64-probe mean, plus 0.05 nats for the two solves' different
    // adaptive steps at rtol = atol = 1e-4 (a batch of 64 and a single molecule).
    assert!(
        (mean - exact).abs() < 4.0 * se + 0.05,
        "Hutchinson mean {mean} +- {se} vs exact {exact}"
    );
}

#[test]
fn samples_have_the_requested_sizes_and_finite_positions() {
    let Some(dir) = pretrained_dir() else { return };
    let _guard = geometry::testing::seeded(6);
    let model = model(&dir);
    let (molecules, stats) = model.sample(&[4, 9], Kind::Float).unwrap();
    assert_eq!(molecules.len(), 2);
    assert_eq!(molecules[0].n_atoms(), 4);
    assert_eq!(molecules[1].positions.len(), 27);
    assert!(molecules
        .iter()
        .all(|m| m.positions.iter().all(|v| v.is_finite())));
    assert!(stats.nfe > 0);
}

#[test]
fn table2_runs_end_to_end_on_a_tiny_profile() {
    let Some(dir) = pretrained_dir() else { return };
    let _guard = geometry::testing::seeded(7);
    let out = tempfile::tempdir().unwrap();
    let mut options =
        experiments::qm9::Table2Options::new(experiments::qm9::Table2Profile::Default, dir);
    options.data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/qm9.h5");
    options.out_dir = out.path().to_path_buf();
    options.n_nll = Some(3);
    options.n_exact = 0;
    options.n_samples = 3;
    options.progress = false;
    // The GNF baselines, trained for one epoch of two steps on 8 molecules.
    options.baseline_protocol = experiments::qm9::BaselineProtocol {
        n_train: Some(8),
        epochs: 1,
        batch_size: 4,
        n_layers: 1,
        hidden_nf: 8,
        lr: 5e-4,
        gradients: experiments::config::GradientMethod::Backprop,
        n_val: Some(4),
        n_test: Some(3),
    };
    let table = experiments::qm9::reproduce_table2(&options).unwrap();
    assert_eq!(table.baselines.len(), 2);
    for (b, name) in table.baselines.iter().zip(["gnf_att", "gnf_att_aug"]) {
        assert_eq!(b.method.name(), name);
        assert_eq!((b.training.steps, b.training.best_epoch), (2, 1));
        assert_eq!(b.nll.n_molecules, 3);
        assert_eq!(b.samples.stability.molecules, 3);
        let row = table
            .rows
            .iter()
            .find(|r| {
                r.method.starts_with("GNF-attention")
                    && r.nll == Some((b.nll.nll, b.nll.nll_std_err))
            })
            .unwrap();
        assert!(row.source.contains("1 of 100 epochs"), "{}", row.source);
        let run = out
            .path()
            .join(format!("table2/{name}-default-tol1e-4-seed0"));
        assert!(run.join("best.safetensors").exists(), "{}", run.display());
        assert!(out
            .path()
            .join(format!("table2-default-{name}-samples.xyz"))
            .exists());
    }
    assert_eq!(table.nll_hutchinson.n_molecules, 3);
    assert!(table.nll_hutchinson.nll.is_finite());
    assert_eq!(table.samples.stability.molecules, 3);
    // The data row: the stability of QM9 itself (FACTS.md 2: 99.36% / 95.28%).
    assert!((table.data.atom_fraction() - 0.9936).abs() < 5e-5);
    let md = table.write(out.path()).unwrap();
    let text = std::fs::read_to_string(md).unwrap();
    let enf = table.rows.iter().find(|r| r.method == "E-NF").unwrap();
    assert_eq!(enf.nll.map(|n| n.0), Some(table.nll_hutchinson.nll));
    assert!(text.contains(&format!("{:.2}", table.nll_hutchinson.nll)));
    assert!(out.path().join("table2-default-samples.xyz").exists());
}

#[test]
fn an_interrupted_nll_evaluation_resumes_from_its_journal_to_the_same_values() {
    let Some(dir) = pretrained_dir() else { return };
    let _guard = geometry::testing::seeded(11);
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/qm9.h5");
    let ds = datasets::qm9::ensure_qm9(&data, None).unwrap();
    let m = model(&dir);
    // The four smallest test molecules: cheap solves.
    let mut rows = ds.splits.test.clone();
    rows.sort_by_key(|&r| (ds.n_atoms[r], r));
    rows.truncate(4);
    let trace = TraceEstimator::Hutchinson(Noise::Gaussian);
    let out = tempfile::tempdir().unwrap();
    let whole = out.path().join("whole.jsonl");
    let eval = |journal: &std::path::Path| {
        experiments::qm9::evaluate_nll(&m, &ds, &rows, 2, trace, 5, Some(journal), |_| {})
    };
    let full = eval(&whole).unwrap();
    assert_eq!((full.n_molecules, full.resumed_batches), (4, 0));

    // Interrupted after the first batch, in the middle of writing the second.
    let text = std::fs::read_to_string(&whole).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "a header and two batches");
    let cut = out.path().join("cut.jsonl");
    let half = &lines[2][..lines[2].len() / 2];
    std::fs::write(&cut, format!("{}\n{}\n{half}", lines[0], lines[1])).unwrap();
    let resumed = eval(&cut).unwrap();
    assert_eq!(resumed.resumed_batches, 1);
    // Each batch draws its noise from its own seed: the re-evaluated batch gives the same values.
    assert_eq!(resumed.nll, full.nll);
    assert_eq!(resumed.mean_log_q, full.mean_log_q);
    let again: Vec<String> = std::fs::read_to_string(&cut)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let values = |line: &str| {
        let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
        v.as_object_mut().unwrap().remove("seconds");
        v
    };
    assert_eq!(again.len(), 3);
    assert_eq!(values(&again[2]), values(lines[2]));

    // A finished journal is read back without evaluating; another seed is refused.
    assert_eq!(eval(&whole).unwrap().resumed_batches, 2);
    let err = experiments::qm9::evaluate_nll(&m, &ds, &rows, 2, trace, 6, Some(&whole), |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("seed: 5 in the journal, 6 now"), "{err}");
}
