//! Table 3 of the paper: QM9 positional (the 19-atom molecules of QM9, positions only; FACTS.md
//! sections 2 and 4). Every method of Table 1 is trained on the same data set as a 19-particle
//! system in 3D ([`System::Qm9Positional`], cut from `qm9.h5` on first use), then judged by its
//! test NLL and by the Jensen-Shannon divergence between the histogram of interatomic distances
//! of 1,000 sampled molecules and that of the training molecules.
//!
//! The protocol is the reference implementation's (`main_qm9_pos.py` and the commands of its
//! README): batch 128, 6 layers of 64 features for E-NF and the GNF methods, NLL plus 1e-3 times
//! the ODE regulariser, gradients by the adjoint method, adaptive gradient clipping, Gaussian
//! Hutchinson probes for training,
//! validation and test, validation every epoch and the test NLL of the best-validation epoch;
//! learning rates 2e-4 (E-NF, simple dynamics) and 5e-4 (GNF, GNF-att, GNF-att-aug, kernel
//! dynamics); 1,000 epochs (the script's default: the paper gives no number). The JS divergence
//! is measured once, on the best-validation parameters (the reference tracked it at the
//! best-validation epoch too).

use crate::checkpoint;
use crate::config::{
    DataConfig, FlowMethod, GradientMethod, ModelConfig, RunConfig, System, TrainingConfig,
};
use crate::error::ExperimentError;
use crate::model::EnfModel;
use crate::results::RunResult;
use crate::table1::{finished, PlannedRun, Profile};
use crate::train::{files, train};
use datasets::atomic::write_atomic as atomic_write;
use datasets::qm9::divergence::{DISTANCE_BINS, DISTANCE_RANGE};
use datasets::qm9::{
    distance_histogram, js_divergence, QM9_POSITIONAL_TEST, QM9_POSITIONAL_TRAIN,
    QM9_POSITIONAL_VAL,
};
use datasets::{ensure_dataset, ParticleDataset};
use egnn::{EgnnConfig, Masks};
use flow::{Noise, TraceEstimator};
use ode::OdeSolver;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind};

/// The paper's Table 3 (FACTS.md section 4): per method, test NLL in nats and the JS divergence
/// of relative distances.
pub const PAPER: [(FlowMethod, f64, f64); 6] = [
    (FlowMethod::SimpleDynamics, 73.0, 0.086),
    (FlowMethod::KernelDynamics, 38.6, 0.029),
    (FlowMethod::Gnf, -0.9, 0.011),
    (FlowMethod::GnfAtt, -26.6, 0.007),
    (FlowMethod::GnfAttAug, -33.5, 0.006),
    (FlowMethod::Enf, -70.2, 0.006),
];

/// The paper's `(NLL, JS divergence)` of `method`.
pub fn paper_row(method: FlowMethod) -> Option<(f64, f64)> {
    PAPER
        .iter()
        .find(|(m, _, _)| *m == method)
        .map(|&(_, nll, js)| (nll, js))
}

/// Epochs of the full protocol: the reference script's default (`--n_epochs 1000`), which its
/// README commands keep.
pub const PAPER_EPOCHS: usize = 1_000;

/// Molecules sampled for the JS divergence (the reference's 1,000).
pub const JS_SAMPLES: usize = 1_000;

/// The full protocol's sizes (the reference script's; see the module documentation).
pub const FULL_PROTOCOL: Protocol = Protocol {
    n_train: QM9_POSITIONAL_TRAIN,
    epochs: PAPER_EPOCHS,
    batch_size: 128,
    n_layers: 6,
    hidden_nf: 64,
    n_val: QM9_POSITIONAL_VAL,
    n_test: QM9_POSITIONAL_TEST,
};

/// The default profile's reduction of [`FULL_PROTOCOL`] (see [`Protocol`]).
pub const DEFAULT_PROTOCOL: Protocol = Protocol {
    n_train: 2_048,
    epochs: 3,
    batch_size: 32,
    n_layers: 3,
    hidden_nf: 32,
    n_val: 500,
    n_test: 500,
};

/// The sizes of a Table 3 run: [`FULL_PROTOCOL`], or how the default profile
/// ([`DEFAULT_PROTOCOL`]) shrinks it to fit a 2-core machine: a step of the paper's
/// 6 x 64 E-NF at batch 128 takes 37 s here with the adjoint (46 function evaluations) and its
/// validation over 2,501 molecules 129 s, so the default trains Table 1's model size on fewer
/// molecules in smaller batches and evaluates on the first molecules of each split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protocol {
    /// Training molecules: the first `n_train` of the positional training split.
    pub n_train: usize,
    /// Epochs.
    pub epochs: usize,
    /// Molecules per optimiser step.
    pub batch_size: usize,
    /// Layers of the E-NF's EGNN and of the GNF methods' GNN.
    pub n_layers: i64,
    /// Hidden features of those networks.
    pub hidden_nf: i64,
    /// Validation molecules (the first of the split).
    pub n_val: usize,
    /// Test molecules (the first of the split).
    pub n_test: usize,
}

impl Protocol {
    /// These sizes with the evaluation subsets clamped to the splits' sizes.
    fn clamped(&self) -> Protocol {
        Protocol {
            n_val: self.n_val.min(QM9_POSITIONAL_VAL),
            n_test: self.n_test.min(QM9_POSITIONAL_TEST),
            ..*self
        }
    }

    /// Applies these sizes to a full-protocol configuration and says how it then differs from
    /// the full protocol, or `None` when it does not.
    fn apply(&self, config: &mut RunConfig) -> Option<String> {
        let p = self.clamped();
        let mut changes = Vec::new();
        let full = config.clone();
        let uses_network = matches!(
            config.model.method,
            FlowMethod::Enf | FlowMethod::Gnf | FlowMethod::GnfAtt | FlowMethod::GnfAttAug
        );
        if uses_network
            && (p.n_layers, p.hidden_nf)
                != (config.model.egnn.n_layers, config.model.egnn.hidden_nf)
        {
            config.model.egnn.n_layers = p.n_layers;
            config.model.egnn.hidden_nf = p.hidden_nf;
            changes.push(format!(
                "{} x {} network instead of {} x {}",
                p.n_layers, p.hidden_nf, full.model.egnn.n_layers, full.model.egnn.hidden_nf
            ));
        }
        if p.n_train != full.data.n_train {
            config.data.n_train = p.n_train;
            changes.push(format!(
                "{} of {} training molecules",
                p.n_train, full.data.n_train
            ));
        }
        if p.batch_size != full.training.batch_size {
            config.training.batch_size = p.batch_size;
            changes.push(format!("batch {}", p.batch_size));
        }
        if p.epochs != full.training.epochs {
            config.training.epochs = p.epochs;
            changes.push(format!("{} of {} epochs", p.epochs, full.training.epochs));
        }
        let mut subsets = Vec::new();
        if p.n_val < QM9_POSITIONAL_VAL {
            config.data.n_val = Some(p.n_val);
            subsets.push(format!("validation on the first {}", p.n_val));
        }
        if p.n_test < QM9_POSITIONAL_TEST {
            config.data.n_test = Some(p.n_test);
            subsets.push(format!("test on the first {}", p.n_test));
        }
        if !subsets.is_empty() {
            changes.push(format!(
                "{} molecules of their splits",
                subsets.join(" and ")
            ));
        }
        (!changes.is_empty()).then(|| changes.join(", "))
    }

    /// A short tag for run directories:
    /// `-n<n_train>-e<epochs>-b<batch>-l<layers>x<hidden>-v<n_val>-t<n_test>` (evaluation
    /// subsets clamped to the splits).
    fn tag(&self) -> String {
        let p = self.clamped();
        format!(
            "-n{}-e{}-b{}-l{}x{}-v{}-t{}",
            p.n_train, p.epochs, p.batch_size, p.n_layers, p.hidden_nf, p.n_val, p.n_test
        )
    }
}

/// The full-protocol configuration of `method` with `seed` (see the module documentation).
pub fn paper_config(method: FlowMethod, seed: u64) -> RunConfig {
    let full = FULL_PROTOCOL;
    RunConfig {
        data: DataConfig {
            system: System::Qm9Positional,
            path: None,
            n_train: full.n_train,
            n_val: None,
            n_test: None,
        },
        model: ModelConfig {
            method,
            egnn: EgnnConfig {
                hidden_nf: full.hidden_nf,
                n_layers: full.n_layers,
                ..EgnnConfig::default()
            },
            ..ModelConfig::default()
        },
        solver: OdeSolver::default(),
        training: TrainingConfig {
            epochs: full.epochs,
            batch_size: full.batch_size,
            eval_every: 1,
            lr: match method {
                FlowMethod::Enf | FlowMethod::SimpleDynamics => 2e-4,
                _ => 5e-4,
            },
            train_trace: TraceEstimator::Hutchinson(Noise::Gaussian),
            eval_trace: TraceEstimator::Hutchinson(Noise::Gaussian),
            test_trace: TraceEstimator::Hutchinson(Noise::Gaussian),
            ode_regularization: 1e-3,
            clip_grad: true,
            // Backpropagation through the solver keeps every evaluation's graph: at batch 128
            // of 19 atoms and 6 x 64 it exhausted 24 GB here. The adjoint keeps memory flat.
            gradients: GradientMethod::Adjoint,
            seed,
            ..TrainingConfig::default()
        },
        adjoint: None,
    }
}

/// What to reproduce.
#[derive(Debug, Clone)]
pub struct Table3Options {
    /// The profile (names the table files).
    pub profile: Profile,
    /// The sizes of every run: the profile's ([`DEFAULT_PROTOCOL`], [`FULL_PROTOCOL`]) unless
    /// changed.
    pub protocol: Protocol,
    /// Methods (all six by default).
    pub methods: Vec<FlowMethod>,
    /// Seeds (default: 0).
    pub seeds: Vec<u64>,
    /// Molecules sampled for the JS divergence.
    pub n_samples: usize,
    /// Where run directories (`<runs_dir>/table3/...`) and the table files go.
    pub runs_dir: PathBuf,
    /// Where `qm9.h5` and `qm9_positional.h5` live (made on first use).
    pub data_dir: PathBuf,
    /// Draw progress bars.
    pub progress: bool,
}

impl Table3Options {
    /// Options for `profile`: its protocol, every method, seed 0, [`JS_SAMPLES`] samples, runs
    /// under `runs/`, data under `data/`.
    pub fn new(profile: Profile) -> Self {
        Table3Options {
            profile,
            protocol: match profile {
                Profile::Default => DEFAULT_PROTOCOL,
                Profile::Full => FULL_PROTOCOL,
            },
            methods: FlowMethod::ALL.to_vec(),
            seeds: vec![0],
            n_samples: JS_SAMPLES,
            runs_dir: PathBuf::from("runs"),
            data_dir: PathBuf::from("data"),
            progress: true,
        }
    }
}

/// The runs of `options`, in the paper's row order, seeds inner. A run that differs from the
/// full protocol says how in [`PlannedRun::reduction`], and its directory
/// (`<runs_dir>/table3/<method>-seed<s>`) gets the protocol's tag appended, so reduced and full
/// runs never share a directory.
pub fn plan(options: &Table3Options) -> Vec<PlannedRun> {
    let mut runs = Vec::new();
    for &(method, _, _) in PAPER.iter().filter(|(m, _, _)| options.methods.contains(m)) {
        for &seed in &options.seeds {
            let mut config = paper_config(method, seed);
            config.data.path = Some(options.data_dir.join("qm9_positional.h5"));
            let mut dir = options
                .runs_dir
                .join("table3")
                .join(format!("{}-seed{seed}", method.name()));
            let reduction = options.protocol.apply(&mut config);
            if reduction.is_some() {
                dir.as_mut_os_string().push(options.protocol.tag());
            }
            runs.push(PlannedRun {
                config,
                reduction,
                run_dir: dir,
            });
        }
    }
    runs
}

/// Sampled molecules of a trained run and the JS divergence of their interatomic distances
/// against the training molecules' (`samples.json` in the run directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleEvaluation {
    /// Molecules sampled.
    pub n_samples: usize,
    /// Seed of libtorch's generator for the prior draws.
    pub seed: u64,
    /// Jensen-Shannon divergence (nats) of the histograms of interatomic distances
    /// ([`DISTANCE_BINS`] bins on [`DISTANCE_RANGE`] Angstrom).
    pub js_divergence: f64,
    /// Mean number of function evaluations per sampling solve.
    pub mean_nfe: f64,
    /// Wall time of the sampling, seconds.
    pub seconds: f64,
    /// The best epoch of the run whose best-validation parameters were sampled (with
    /// `model_validation_nll`, what ties this file to its `result.json`).
    #[serde(default)]
    pub model_best_epoch: Option<usize>,
    /// The validation NLL of those parameters.
    #[serde(default)]
    pub model_validation_nll: Option<f64>,
}

impl SampleEvaluation {
    /// Whether this evaluation is of `n_samples` samples of the parameters `result` reports
    /// (its best epoch and validation NLL), so that it can be reused.
    pub fn describes(&self, result: &RunResult, n_samples: usize) -> bool {
        self.n_samples == n_samples
            && self.model_best_epoch == Some(result.best_epoch)
            && self.model_validation_nll == Some(result.validation.nll)
    }
}

/// File of a run's [`SampleEvaluation`].
pub const SAMPLES_FILE: &str = "samples.json";

/// The normalised histogram of interatomic distances of the training molecules of `dataset`.
///
/// Errors: [`ExperimentError::Data`] for non-finite positions.
pub fn data_distance_histogram(dataset: &ParticleDataset) -> Result<Vec<f64>, ExperimentError> {
    let molecules = dataset
        .splits
        .train
        .iter()
        .filter_map(|&i| dataset.sample(i));
    Ok(distance_histogram(molecules, DISTANCE_RANGE, DISTANCE_BINS)?.probabilities())
}

/// The JS divergence a perfect model would show with `n` samples: the first `n` test molecules'
/// histogram of interatomic distances against the training molecules' (`data_histogram`,
/// [`data_distance_histogram`]). At most the whole test split (1,813 molecules) is used.
///
/// Errors: [`ExperimentError::Data`] for non-finite positions or a histogram of another length.
pub fn data_js_floor(
    dataset: &ParticleDataset,
    data_histogram: &[f64],
    n: usize,
) -> Result<f64, ExperimentError> {
    let test = dataset.splits.test.iter().take(n);
    let molecules = test.filter_map(|&i| dataset.sample(i));
    let h = distance_histogram(molecules, DISTANCE_RANGE, DISTANCE_BINS)?;
    Ok(js_divergence(&h.probabilities(), data_histogram)?)
}

/// Samples `n_samples` molecules of `model` (19 atoms, in batches of at most 250, generator
/// seeded with `seed`) and compares their interatomic distances with `data_histogram`
/// ([`data_distance_histogram`]) by the Jensen-Shannon divergence.
///
/// Errors: [`ExperimentError::Flow`] when a sampling solve fails (non-finite state, too many
/// steps); [`ExperimentError::Data`] for non-finite samples or a histogram of another length.
pub fn evaluate_samples(
    model: &EnfModel,
    data_histogram: &[f64],
    n_samples: usize,
    seed: u64,
    device: Device,
) -> Result<SampleEvaluation, ExperimentError> {
    let start = Instant::now();
    tch::manual_seed(seed as i64);
    let m = System::Qm9Positional.n_particles() as i64;
    let mut positions: Vec<f32> = Vec::with_capacity(n_samples * m as usize * 3);
    let (mut nfe, mut solves) = (0.0, 0usize);
    let mut left = n_samples;
    while left > 0 {
        let b = left.min(250);
        let masks = Masks::full(b as i64, m, Kind::Float, device);
        let (x, _, stats) = model
            .flow
            .sample(&masks, 3, Kind::Float)
            .map_err(|source| ExperimentError::Flow {
                context: format!("sampling {b} QM9-positional molecules"),
                source,
            })?;
        positions.extend(Vec::<f32>::try_from(
            x.to_device(Device::Cpu).contiguous().view([-1]),
        )?);
        nfe += stats.nfe as f64;
        solves += 1;
        left -= b;
    }
    let per = m as usize * 3;
    let generated = distance_histogram(positions.chunks(per), DISTANCE_RANGE, DISTANCE_BINS)?;
    Ok(SampleEvaluation {
        n_samples,
        seed,
        js_divergence: js_divergence(&generated.probabilities(), data_histogram)?,
        mean_nfe: nfe / solves.max(1) as f64,
        seconds: start.elapsed().as_secs_f64(),
        model_best_epoch: None,
        model_validation_nll: None,
    })
}

/// One row of the table: a method over its seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Method.
    pub method: FlowMethod,
    /// How the runs differ from the full protocol, if they do.
    pub reduction: Option<String>,
    /// Finished runs with their sample evaluation, one per seed.
    pub runs: Vec<(RunResult, SampleEvaluation)>,
    /// Planned seeds without a finished run and sample evaluation.
    pub missing_seeds: Vec<u64>,
}

fn mean(v: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    sum / n.max(1) as f64
}

impl Cell {
    /// A markdown row (see [`MARKDOWN_HEADER`]): NLL as mean over seeds (± standard error over
    /// the test molecules for one seed), JS divergence mean over seeds.
    pub fn markdown_row(&self) -> String {
        let (paper_nll, paper_js) = paper_row(self.method).unwrap_or((f64::NAN, f64::NAN));
        let (nll, js) = match self.runs.as_slice() {
            [] => ("-".to_string(), "-".to_string()),
            [(r, s)] => (
                format!("{:.2} ± {:.2}", r.test.nll, r.test.nll_std_err),
                format!("{:.3}", s.js_divergence),
            ),
            runs => (
                format!("{:.2}", mean(runs.iter().map(|(r, _)| r.test.nll))),
                format!("{:.3}", mean(runs.iter().map(|(_, s)| s.js_divergence))),
            ),
        };
        let mut seeds = self.runs.len().to_string();
        if !self.missing_seeds.is_empty() {
            seeds += &format!(" ({} missing)", self.missing_seeds.len());
        }
        let first = self.runs.first();
        format!(
            "| {} | {nll} | {paper_nll:.1} | {js} | {paper_js:.3} | {seeds} | {} | {} | {:.1} | {:.2} s | {:.0} s | {} |",
            self.method.paper_name(),
            first.map_or(0, |(r, _)| r.config.training.epochs),
            first.map_or(0, |(r, _)| r.train_steps),
            mean(self.runs.iter().map(|(r, _)| r.mean_train_nfe)),
            mean(self.runs.iter().map(|(r, _)| r.median_step_seconds)),
            self.runs
                .iter()
                .map(|(r, s)| r.wall_seconds + s.seconds)
                .sum::<f64>(),
            self.reduction.as_deref().unwrap_or("full protocol"),
        )
    }
}

/// Header of the markdown table.
pub const MARKDOWN_HEADER: &str = "| method | test NLL (ours, nats) | paper | JS rel. dist. (ours) | paper | seeds | epochs | steps | NFE/step | s/step | wall time | protocol |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

/// A reproduced Table 3.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    /// The profile.
    pub profile: Profile,
    /// Rows in the paper's order.
    pub cells: Vec<Cell>,
    /// Molecules sampled per run for the JS divergence.
    pub n_samples: usize,
    /// The floor of the JS column: the divergence of the first `n_samples` test molecules
    /// (data, not samples) against the training molecules ([`data_js_floor`]); `None` when the
    /// data set was not at hand.
    pub data_js: Option<f64>,
}

impl Table {
    /// The table in markdown, with the profile and how reduced rows are reduced.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Table 3 ({} profile): QM9 positional, test NLL in nats and the Jensen-Shannon divergence of interatomic distances of {} samples, ours beside the paper's.\n\n{MARKDOWN_HEADER}",
            self.profile.name(),
            self.n_samples
        );
        for cell in &self.cells {
            out.push('\n');
            out.push_str(&cell.markdown_row());
        }
        if let Some(js) = self.data_js {
            out.push_str(&format!(
                "\n| data: test molecules against the training molecules | - | - | {js:.4} | - | - | - | - | - | - | - | the JS floor of this many molecules |"
            ));
        }
        out.push_str("\n\n±: for a single seed, the standard error over the test molecules (Hutchinson estimate, Gaussian probes, as the reference evaluates).");
        if self.cells.iter().any(|c| c.reduction.is_some()) {
            out.push_str("\n\nRows whose protocol column is not \"full protocol\" are reduced as that column says (smaller networks, fewer training molecules, smaller batches, fewer epochs, evaluation on the first molecules of each split): they show early training, not the paper's protocol. `--full` runs it.");
        }
        let missing: usize = self.cells.iter().map(|c| c.missing_seeds.len()).sum();
        if missing > 0 {
            out.push_str(&format!("\n\n{missing} planned runs have no result yet."));
        }
        let wall: f64 = self
            .cells
            .iter()
            .flat_map(|c| &c.runs)
            .map(|(r, s)| r.wall_seconds + s.seconds)
            .sum();
        out.push_str(&format!(
            "\n\nTraining, evaluation and sampling wall time, all runs: {wall:.0} s.\n"
        ));
        out
    }

    /// Writes `table3-<profile>.md` and `.json` into `dir`, atomically; returns the markdown path.
    ///
    /// Errors: [`ExperimentError::Io`].
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ExperimentError> {
        let stem = format!("table3-{}", self.profile.name());
        crate::results::write_table(dir, &stem, &self.markdown(), self)
    }
}

fn read_samples(path: &Path) -> Result<Option<SampleEvaluation>, ExperimentError> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| ExperimentError::Config {
            key: path.display().to_string(),
            message: format!("not a sample evaluation: {e}"),
        })
}

/// Trains every planned run (skipping finished ones, resuming interrupted ones), samples each
/// trained model once ([`evaluate_samples`], written to [`SAMPLES_FILE`]), and assembles the
/// table ([`merge`]). The data set is cut from `qm9.h5` on first use (which is made from the
/// qm9pack wheel when missing).
///
/// Errors: data, training, sampling and I/O errors; a finished run of another configuration in a
/// planned directory ([`ExperimentError::Config`], never overwritten).
pub fn reproduce(options: &Table3Options) -> Result<Table, ExperimentError> {
    let runs = plan(options);
    let Some(first) = runs.first() else {
        return merge(options);
    };
    let path = first.config.data.path.clone().unwrap_or_default();
    let dataset = ensure_dataset(&path, System::Qm9Positional)?;
    let data_histogram = data_distance_histogram(&dataset)?;
    let digest = dataset.digest();
    for run in &runs {
        let result_path = run.run_dir.join(files::RESULT);
        let samples_path = run.run_dir.join(SAMPLES_FILE);
        let result = match finished(run, &result_path)? {
            Some(done) => {
                done.check_data(&digest, &result_path)?;
                done
            }
            None => {
                tracing::info!(
                    "training {} on QM9 positional, seed {}, {} molecules, {} epochs{} -> {}",
                    run.config.model.method.paper_name(),
                    run.config.training.seed,
                    run.config.data.n_train,
                    run.config.training.epochs,
                    run.reduction
                        .as_ref()
                        .map_or(String::new(), |r| format!(" ({r})")),
                    run.run_dir.display()
                );
                let result = train(&run.config, &dataset, &run.run_dir, options.progress)?;
                tracing::info!("{}", result.summary());
                result
            }
        };
        if read_samples(&samples_path)?.is_some_and(|s| s.describes(&result, options.n_samples)) {
            continue;
        }
        let device = run.config.training.device.device()?;
        let mut model = EnfModel::for_run(&run.config, device)?;
        checkpoint::load(&mut model.vs, &run.run_dir.join(files::BEST))?;
        let mut eval = evaluate_samples(
            &model,
            &data_histogram,
            options.n_samples,
            run.config.training.seed,
            device,
        )?;
        eval.model_best_epoch = Some(result.best_epoch);
        eval.model_validation_nll = Some(result.validation.nll);
        tracing::info!(
            "{}: JS divergence of interatomic distances {:.4} ({} samples, {:.1} s)",
            run.config.model.method.paper_name(),
            eval.js_divergence,
            eval.n_samples,
            eval.seconds
        );
        let json = serde_json::to_string_pretty(&eval).map_err(|e| ExperimentError::Config {
            key: SAMPLES_FILE.into(),
            message: e.to_string(),
        })?;
        atomic_write(&samples_path, json.as_bytes())?;
    }
    let mut table = merge_runs(options)?;
    table.data_js = Some(data_js_floor(&dataset, &data_histogram, options.n_samples)?);
    Ok(table)
}

/// Assembles the table of `options`' plan from the files under `options.runs_dir` without
/// training or sampling; runs without both a result and a sample evaluation are missing. The
/// data row ([`data_js_floor`]) is filled in when `<data_dir>/qm9_positional.h5` is readable.
///
/// Errors: a result of another configuration in a planned directory; unreadable files.
pub fn merge(options: &Table3Options) -> Result<Table, ExperimentError> {
    let mut table = merge_runs(options)?;
    let path = options.data_dir.join("qm9_positional.h5");
    if let Ok(dataset) = ParticleDataset::read(&path) {
        let data_histogram = data_distance_histogram(&dataset)?;
        table.data_js = Some(data_js_floor(&dataset, &data_histogram, options.n_samples)?);
    }
    Ok(table)
}

fn merge_runs(options: &Table3Options) -> Result<Table, ExperimentError> {
    let mut cells: Vec<Cell> = Vec::new();
    for run in plan(options) {
        let method = run.config.model.method;
        if cells.last().is_none_or(|c| c.method != method) {
            cells.push(Cell {
                method,
                reduction: run.reduction.clone(),
                runs: Vec::new(),
                missing_seeds: Vec::new(),
            });
        }
        let Some(cell) = cells.last_mut() else {
            continue;
        };
        let result = finished(&run, &run.run_dir.join(files::RESULT))?;
        let samples = read_samples(&run.run_dir.join(SAMPLES_FILE))?;
        match (result, samples) {
            (Some(r), Some(s)) if s.describes(&r, options.n_samples) => cell.runs.push((r, s)),
            _ => cell.missing_seeds.push(run.config.training.seed),
        }
    }
    Ok(Table {
        profile: options.profile,
        cells,
        n_samples: options.n_samples,
        data_js: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_rows_and_configs() {
        assert_eq!(paper_row(FlowMethod::Enf), Some((-70.2, 0.006)));
        assert_eq!(paper_row(FlowMethod::SimpleDynamics), Some((73.0, 0.086)));
        let c = paper_config(FlowMethod::Enf, 0);
        c.validate().unwrap();
        assert_eq!(c.data.system, System::Qm9Positional);
        assert_eq!(c.data.n_train, 13_832);
        assert_eq!((c.model.egnn.n_layers, c.model.egnn.hidden_nf), (6, 64));
        assert_eq!((c.training.batch_size, c.training.epochs), (128, 1_000));
        assert_eq!(
            (c.training.ode_regularization, c.training.clip_grad),
            (1e-3, true)
        );
        assert_eq!(c.training.lr, 2e-4);
        assert_eq!(paper_config(FlowMethod::GnfAttAug, 0).training.lr, 5e-4);
        assert_eq!(
            paper_config(FlowMethod::KernelDynamics, 0).training.lr,
            5e-4
        );
    }

    #[test]
    fn plans_name_their_reductions_and_keep_them_apart() {
        let default = plan(&Table3Options::new(Profile::Default));
        assert_eq!(default.len(), 6);
        assert_eq!(default[0].config.model.method, FlowMethod::SimpleDynamics);
        let r = &default[5];
        assert_eq!(r.config.data.n_train, DEFAULT_PROTOCOL.n_train);
        assert_eq!(r.config.training.epochs, DEFAULT_PROTOCOL.epochs);
        assert!(r.reduction.as_deref().unwrap().contains("epochs"));
        assert_eq!(r.config.model.egnn.n_layers, DEFAULT_PROTOCOL.n_layers);
        assert_eq!(r.config.data.n_val, Some(DEFAULT_PROTOCOL.n_val));
        assert!(r
            .run_dir
            .ends_with(format!("enf-seed0{}", DEFAULT_PROTOCOL.tag())));
        // Kernel dynamics has no network to shrink.
        assert!(!default[1].reduction.as_deref().unwrap().contains("network"));
        let full = plan(&Table3Options::new(Profile::Full));
        assert!(full.iter().all(|r| r.reduction.is_none()));
        assert!(full[5].run_dir.ends_with("enf-seed0"));
    }
}
