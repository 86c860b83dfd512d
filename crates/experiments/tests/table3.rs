//! Table 3 end to end on a tiny protocol: the QM9-positional data set is cut from the real QM9
//! file, every planned run trains (adjoint, ODE regulariser, clipping), samples molecules and
//! writes its files; a second invocation reuses them; the table carries the paper's numbers.

use experiments::config::FlowMethod;
use experiments::table1::Profile;
use experiments::table3::{self, Protocol, Table3Options, SAMPLES_FILE};
use std::path::PathBuf;

#[test]
fn table3_trains_samples_and_reuses_finished_runs() {
    let _rng = geometry::testing::seeded(0);
    let runs = tempfile::tempdir().unwrap();
    let mut options = Table3Options::new(Profile::Default);
    options.protocol = Protocol {
        n_train: 16,
        epochs: 2,
        batch_size: 8,
        n_layers: 1,
        hidden_nf: 8,
        n_val: 8,
        n_test: 8,
    };
    options.methods = vec![FlowMethod::Enf, FlowMethod::KernelDynamics];
    options.n_samples = 20;
    options.runs_dir = runs.path().to_path_buf();
    options.data_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data");
    options.progress = false;

    let table = table3::reproduce(&options).unwrap();
    // Rows in the paper's order: kernel dynamics before E-NF.
    let methods: Vec<FlowMethod> = table.cells.iter().map(|c| c.method).collect();
    assert_eq!(methods, [FlowMethod::KernelDynamics, FlowMethod::Enf]);
    for cell in &table.cells {
        assert!(cell.missing_seeds.is_empty());
        let (result, samples) = &cell.runs[0];
        assert!(result.test.nll.is_finite() && result.test.n_samples == 8);
        assert_eq!(result.train_steps, 4);
        assert_eq!(result.system, "QM9-positional");
        assert_eq!(samples.n_samples, 20);
        assert!((0.0..=2f64.ln()).contains(&samples.js_divergence));
        let reduction = cell.reduction.as_deref().unwrap();
        assert!(
            reduction.contains("16 of 13832 training molecules"),
            "{reduction}"
        );
    }
    // The data row: 20 test molecules against the training molecules, a small positive floor.
    let floor = table.data_js.unwrap();
    assert!(floor > 0.0 && floor < 0.2, "{floor}");
    let md = table.markdown();
    assert!(
        md.contains("| E-NF |") && md.contains("-70.2") && md.contains("0.029"),
        "{md}"
    );
    let written = table.write(runs.path()).unwrap();
    assert!(written.exists() && runs.path().join("table3-default.json").exists());

    // A second invocation trains and samples nothing: the files stay as they were.
    let samples_file = table3::plan(&options)[1].run_dir.join(SAMPLES_FILE);
    let before = std::fs::read_to_string(&samples_file).unwrap();
    let modified = std::fs::metadata(&samples_file)
        .unwrap()
        .modified()
        .unwrap();
    let again = table3::reproduce(&options).unwrap();
    assert_eq!(std::fs::read_to_string(&samples_file).unwrap(), before);
    assert_eq!(
        std::fs::metadata(&samples_file)
            .unwrap()
            .modified()
            .unwrap(),
        modified
    );
    assert_eq!(again.markdown(), md);
    assert_eq!(table3::merge(&options).unwrap().markdown(), md);
}
