//! Shared set-up of the criterion benchmarks: a DW4 model and batches of the project's own data.

use datasets::{ensure_dataset, Batch, ParticleDataset, SplitName, System};
use experiments::config::RunConfig;
use experiments::data::TensorBatch;
use experiments::EnfModel;
use std::path::PathBuf;
use tch::Kind;

/// The DW4 data set of the workspace's `data/` folder (generated on first use, a few seconds).
pub fn dw4_dataset() -> ParticleDataset {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/dw4.h5");
    ensure_dataset(&path, System::Dw4).expect("the DW4 data set can be generated")
}

/// The first `n` training samples of DW4 as a centred f32 batch.
pub fn dw4_batch(dataset: &ParticleDataset, n: usize) -> TensorBatch {
    let idx = &dataset.splits.get(SplitName::Train)[..n];
    TensorBatch::from_batch(
        &Batch::gather(dataset, idx).expect("indices in range"),
        Kind::Float,
        tch::Device::Cpu,
    )
}

/// The paper's DW4 E-NF (3 layers, 32 features) at its initialisation for seed 0, with the run
/// configuration of the 1,000-sample cell; one libtorch thread and denormals flushed, as training runs.
pub fn dw4_model() -> (RunConfig, EnfModel) {
    geometry::flush_denormals();
    tch::set_num_threads(1);
    let config = RunConfig::paper_cell(System::Dw4, 1000, 0).expect("a cell of the paper");
    tch::manual_seed(0);
    let model = EnfModel::for_run(&config, tch::Device::Cpu).expect("valid model");
    (config, model)
}
