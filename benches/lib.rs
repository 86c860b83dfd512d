//! Shared set-up of the criterion benchmarks: models at their seeded initialisation, batches of
//! the project's own DW4 data and of the literature's reference samples, and an optimiser whose
//! parameters can be reset between timed steps.

use datasets::{ensure_dataset, read_npy_positions, Batch, ParticleDataset, SplitName, System};
use experiments::config::RunConfig;
use experiments::data::TensorBatch;
use experiments::EnfModel;
use std::path::PathBuf;
use tch::{Kind, Tensor};

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

/// The folder of the literature's reference samples: `$ENF_REFERENCE_DIR`, or
/// `../shared/data/reference-mcmc` beside the repository.
pub fn reference_dir() -> PathBuf {
    std::env::var_os("ENF_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/reference-mcmc")
        })
}

/// The first `n` samples of a reference `.npy` file (`train_split_DW4.npy`,
/// `val_split_LJ13-1000.npy`) as a centred f32 batch: the inputs the torchdiffeq comparison
/// (`benches/torchdiffeq/compare.py`) uses too.
pub fn reference_batch(system: System, file: &str, n: usize) -> TensorBatch {
    let (m, d) = (system.n_particles(), system.n_dims());
    let path = reference_dir().join(file);
    let positions = read_npy_positions(&path, m, d)
        .unwrap_or_else(|e| panic!("reference samples {}: {e}", path.display()));
    let batch = Batch {
        positions: positions[..n * m * d].to_vec(),
        node_mask: vec![1.0; n * m],
        batch_size: n,
        n_particles: m,
        n_dims: d,
    };
    let mut tensors = TensorBatch::from_batch(&batch, Kind::Float, tch::Device::Cpu);
    tensors.positions = geometry::centre(&tensors.positions, None).expect("rank-3 positions");
    tensors
}

/// The paper's E-NF (3 layers, 32 features) for the 1,000-sample cell of `system`, at its
/// initialisation for seed 0; one libtorch thread, denormals flushed and the allocator tuned
/// ([`geometry::tune_allocator`]), as training runs.
pub fn paper_model(system: System) -> (RunConfig, EnfModel) {
    geometry::flush_denormals();
    geometry::tune_allocator();
    tch::set_num_threads(1);
    let config = RunConfig::paper_cell(system, 1000, 0).expect("a cell of the paper");
    tch::manual_seed(0);
    let model = EnfModel::for_run(&config, tch::Device::Cpu).expect("valid model");
    (config, model)
}

/// The paper's DW4 E-NF (see [`paper_model`]).
pub fn dw4_model() -> (RunConfig, EnfModel) {
    paper_model(System::Dw4)
}

/// AdamW as the paper trains (amsgrad, weight decay 1e-12, lr 5e-4) and a closure that puts the
/// model's parameters back to their values now, so every timed step starts from the same model
/// and the NFE does not drift as the optimiser changes it.
pub fn optimiser_with_reset(model: &EnfModel) -> (experiments::optim::AdamW, impl Fn() + '_) {
    let opt = experiments::train::optimiser(model, &Default::default());
    let initial: Vec<Tensor> = model
        .vs
        .trainable_variables()
        .iter()
        .map(|t| t.copy())
        .collect();
    let reset = move || {
        tch::no_grad(|| {
            for (mut p, v) in model.vs.trainable_variables().into_iter().zip(&initial) {
                p.copy_(v);
            }
        })
    };
    (opt, reset)
}

/// One training step of `model` on `batch` as `config` says (epoch 0, step 0, no gradient
/// clipping record): the step every training benchmark times. Returns the batch's NLL and the
/// step's NFE.
pub fn train_step(
    model: &EnfModel,
    opt: &mut experiments::optim::AdamW,
    batch: &TensorBatch,
    config: &RunConfig,
) -> (f64, f64) {
    experiments::train::train_step(model, opt, &mut Default::default(), batch, config, 0, 0)
        .expect("a training step of an initialised model")
}
