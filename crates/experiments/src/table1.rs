//! Table 1 of the paper: test NLL of flows on DW4 and LJ13 by number of training samples.

use crate::config::{FlowMethod, RunConfig, System};
use crate::error::ExperimentError;
use crate::results::RunResult;
use crate::train::{files, train};
use datasets::ensure_dataset;
use std::path::{Path, PathBuf};

/// The training-set sizes of the paper's sweep for `system` (FACTS.md section 3).
pub fn paper_sizes(system: System) -> [usize; 4] {
    match system {
        System::Dw4 => [100, 1_000, 10_000, 100_000],
        System::Lj13 => [10, 100, 1_000, 10_000],
    }
}

/// The paper's Table 1 (FACTS.md section 4): per method, the test NLL in nats at DW4's sizes
/// ([`paper_sizes`]) then LJ13's.
pub const PAPER: [(FlowMethod, [f64; 8]); 6] = [
    (
        FlowMethod::Gnf,
        [11.93, 11.31, 10.38, 7.95, 43.56, 42.84, 37.17, 36.49],
    ),
    (
        FlowMethod::GnfAtt,
        [11.65, 11.13, 9.34, 7.83, 43.32, 36.22, 33.84, 32.65],
    ),
    (
        FlowMethod::GnfAttAug,
        [8.81, 8.31, 7.90, 7.61, 41.09, 31.50, 30.74, 30.93],
    ),
    (
        FlowMethod::SimpleDynamics,
        [9.58, 9.51, 9.53, 9.47, 33.67, 33.10, 32.79, 32.99],
    ),
    (
        FlowMethod::KernelDynamics,
        [8.74, 8.67, 8.42, 8.26, 35.03, 31.49, 31.17, 31.25],
    ),
    (
        FlowMethod::Enf,
        [8.31, 8.15, 7.69, 7.48, 33.12, 30.99, 30.56, 30.41],
    ),
];

/// The paper's test NLL for a cell, if it reports one.
pub fn paper_nll(method: FlowMethod, system: System, n_train: usize) -> Option<f64> {
    let column = paper_sizes(system).iter().position(|&n| n == n_train)?;
    let offset = match system {
        System::Dw4 => 0,
        System::Lj13 => 4,
    };
    PAPER
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, row)| row[offset + column])
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Table1Options {
    /// Methods (E-NF and the baselines implemented so far).
    pub methods: Vec<FlowMethod>,
    /// Systems.
    pub systems: Vec<System>,
    /// Training-set sizes.
    pub n_train: Vec<usize>,
    /// Seeds (the paper averages 3).
    pub seeds: Vec<u64>,
    /// Override of the paper's epoch count (a reduced run), if any.
    pub epochs: Option<usize>,
    /// Where run directories go (`<runs_dir>/table1/<system>-n<n>-seed<s>`).
    pub runs_dir: PathBuf,
    /// Where data sets live (generated on first use).
    pub data_dir: PathBuf,
    /// Draw progress bars.
    pub progress: bool,
}

/// One cell of the table over its seeds.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Method.
    pub method: FlowMethod,
    /// System.
    pub system: System,
    /// Training samples.
    pub n_train: usize,
    /// One result per seed.
    pub runs: Vec<RunResult>,
}

impl Cell {
    /// Mean and standard deviation (n - 1 denominator; 0 for one seed) of the test NLL over seeds.
    pub fn mean_std(&self) -> (f64, f64) {
        let v: Vec<f64> = self.runs.iter().map(|r| r.test.nll).collect();
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = if v.len() > 1 {
            v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        (mean, var.sqrt())
    }

    /// A markdown table row: method, system, samples, ours, paper, seeds, epochs, NFE, wall time.
    /// The NLL column is the mean ± standard deviation over seeds, or for a single seed its test
    /// NLL ± the standard error over the test samples.
    pub fn markdown_row(&self) -> String {
        let (mean, std) = match self.runs.as_slice() {
            [one] => (one.test.nll, one.test.nll_std_err),
            _ => self.mean_std(),
        };
        let paper = paper_nll(self.method, self.system, self.n_train)
            .map_or("-".into(), |p| format!("{p:.2}"));
        let epochs = self.runs.first().map_or(0, |r| r.config.training.epochs);
        let nfe =
            self.runs.iter().map(|r| r.mean_train_nfe).sum::<f64>() / self.runs.len().max(1) as f64;
        let wall: f64 = self.runs.iter().map(|r| r.wall_seconds).sum();
        format!(
            "| {} | {} | {} | {:.2} ± {:.2} | {} | {} | {} | {:.1} | {:.0} s |",
            self.method.paper_name(),
            self.system.name(),
            self.n_train,
            mean,
            std,
            paper,
            self.runs.len(),
            epochs,
            nfe,
            wall
        )
    }
}

/// Header of the markdown table printed by [`reproduce`] (± is the standard deviation over seeds,
/// or the standard error over the test samples for a single seed).
pub const MARKDOWN_HEADER: &str = "| method | system | training samples | test NLL (ours, nats) | paper | seeds | epochs | NFE/step | wall time |\n|---|---|---|---|---|---|---|---|---|";

/// Runs (or reuses finished runs of) every selected cell and seed and returns the cells.
/// A run directory with a `result.json` of the same configuration is not run again; one with a
/// `result.json` of another configuration is an error, never overwritten.
///
/// Errors: data generation, training and I/O errors.
pub fn reproduce(options: &Table1Options) -> Result<Vec<Cell>, ExperimentError> {
    let mut cells = Vec::new();
    for &system in &options.systems {
        let data_path = options
            .data_dir
            .join(format!("{}.h5", system.name().to_lowercase()));
        let dataset = ensure_dataset(&data_path, system)?;
        for &method in &options.methods {
            for &n_train in &options.n_train {
                cells.push(reproduce_cell(
                    options, method, system, n_train, &data_path, &dataset,
                )?);
            }
        }
    }
    Ok(cells)
}

/// Every seed of one cell: trained, or reused when finished with the same configuration.
fn reproduce_cell(
    options: &Table1Options,
    method: FlowMethod,
    system: System,
    n_train: usize,
    data_path: &Path,
    dataset: &datasets::ParticleDataset,
) -> Result<Cell, ExperimentError> {
    let mut cell = Cell {
        method,
        system,
        n_train,
        runs: Vec::new(),
    };
    for &seed in &options.seeds {
        let mut config = RunConfig::paper_cell_for(method, system, n_train, seed)?;
        config.data.path = Some(data_path.to_path_buf());
        if let Some(epochs) = options.epochs {
            config.training.epochs = epochs;
            config.training.eval_every = config.training.eval_every.min(epochs);
        }
        let run_dir = run_dir(&options.runs_dir, method, system, n_train, seed);
        let result_path = run_dir.join(files::RESULT);
        let result = if result_path.exists() {
            // A finished run is never overwritten: reuse it, or say why not.
            let done = RunResult::read(&result_path)?;
            if done.config != config {
                return Err(ExperimentError::Config {
                    key: result_path.display().to_string(),
                    message: "holds a finished run with another configuration; move it away or choose another --runs-dir".into(),
                });
            }
            tracing::info!("reusing finished run {}", run_dir.display());
            done
        } else {
            tracing::info!(
                "training {} on {} with {n_train} samples, seed {seed}, {} epochs -> {}",
                method.paper_name(),
                system.name(),
                config.training.epochs,
                run_dir.display()
            );
            train(&config, dataset, &run_dir, options.progress)?
        };
        tracing::info!("{}", result.summary());
        cell.runs.push(result);
    }
    Ok(cell)
}

/// The run directory of one seed of one cell: `<runs_dir>/table1/<system>-n<n>-seed<s>` for
/// E-NF, with a `<method>-` prefix (`gnf_att-`, `kernel_dynamics-`, ...) for the baselines.
pub fn run_dir(
    runs_dir: &Path,
    method: FlowMethod,
    system: System,
    n_train: usize,
    seed: u64,
) -> PathBuf {
    let prefix = match method {
        FlowMethod::Enf => String::new(),
        other => format!("{}-", other.name()),
    };
    runs_dir.join("table1").join(format!(
        "{prefix}{}-n{n_train}-seed{seed}",
        system.name().to_lowercase()
    ))
}
