//! Table 1 of the paper: test NLL of flows on DW4 and LJ13 by number of training samples.

use crate::config::{FlowMethod, RunConfig, System};
use crate::error::ExperimentError;
use crate::results::RunResult;
use crate::train::{files, train};
use datasets::ensure_dataset;
use std::path::{Path, PathBuf};

/// The paper's Table 1 (FACTS.md section 4): (method, system, training samples, test NLL in nats).
pub const PAPER: &[(&str, System, usize, f64)] = &[
    ("E-NF", System::Dw4, 100, 8.31),
    ("E-NF", System::Dw4, 1_000, 8.15),
    ("E-NF", System::Dw4, 10_000, 7.69),
    ("E-NF", System::Dw4, 100_000, 7.48),
    ("E-NF", System::Lj13, 10, 33.12),
    ("E-NF", System::Lj13, 100, 30.99),
    ("E-NF", System::Lj13, 1_000, 30.56),
    ("E-NF", System::Lj13, 10_000, 30.41),
    ("Kernel dynamics", System::Dw4, 100, 8.74),
    ("Kernel dynamics", System::Dw4, 1_000, 8.67),
    ("Kernel dynamics", System::Dw4, 10_000, 8.42),
    ("Kernel dynamics", System::Dw4, 100_000, 8.26),
    ("Kernel dynamics", System::Lj13, 10, 35.03),
    ("Kernel dynamics", System::Lj13, 100, 31.49),
    ("Kernel dynamics", System::Lj13, 1_000, 31.17),
    ("Kernel dynamics", System::Lj13, 10_000, 31.25),
];

/// The paper's test NLL for a cell, if it reports one.
pub fn paper_nll(method: &str, system: System, n_train: usize) -> Option<f64> {
    PAPER
        .iter()
        .find(|(m, s, n, _)| *m == method && *s == system && *n == n_train)
        .map(|p| p.3)
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
    pub method: String,
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
        let paper = paper_nll(&self.method, self.system, self.n_train)
            .map_or("-".into(), |p| format!("{p:.2}"));
        let epochs = self.runs.first().map_or(0, |r| r.config.training.epochs);
        let nfe =
            self.runs.iter().map(|r| r.mean_train_nfe).sum::<f64>() / self.runs.len().max(1) as f64;
        let wall: f64 = self.runs.iter().map(|r| r.wall_seconds).sum();
        format!(
            "| {} | {} | {} | {:.2} ± {:.2} | {} | {} | {} | {:.1} | {:.0} s |",
            self.method,
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
        method: method.paper_name().into(),
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
/// E-NF, with a `<method>-` prefix (`kernel_dynamics-`) for the baselines.
pub fn run_dir(
    runs_dir: &Path,
    method: FlowMethod,
    system: System,
    n_train: usize,
    seed: u64,
) -> PathBuf {
    let prefix = match method {
        FlowMethod::Enf => String::new(),
        FlowMethod::KernelDynamics => "kernel_dynamics-".into(),
    };
    runs_dir.join("table1").join(format!(
        "{prefix}{}-n{n_train}-seed{seed}",
        system.name().to_lowercase()
    ))
}
