//! Table 1 of the paper: test NLL of flows on DW4 and LJ13 by number of training samples.

use crate::config::{FlowMethod, RunConfig, System};
use crate::error::ExperimentError;
use crate::results::RunResult;
use crate::train::{files, train};
use datasets::ensure_dataset;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The training-set sizes of the paper's sweep for `system` (FACTS.md section 3); none for QM9
/// positional, which is not a Table 1 system ([`crate::table3`]).
pub fn paper_sizes(system: System) -> &'static [usize] {
    match system {
        System::Dw4 => &[100, 1_000, 10_000, 100_000],
        System::Lj13 => &[10, 100, 1_000, 10_000],
        System::Qm9Positional => &[],
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
        System::Qm9Positional => return None,
    };
    PAPER
        .iter()
        .find(|(m, _)| *m == method)
        .map(|(_, row)| row[offset + column])
}

/// How much of the paper's protocol a reproduction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// All six methods on both systems at one training-set size each, one seed, with fewer
    /// epochs ([`reduced_protocol`]): about half an hour on a 2-core machine.
    #[default]
    Default,
    /// The paper's protocol exactly: every size of the sweep, its epochs, three seeds.
    Full,
}

impl Profile {
    /// The profile's name ("default", "full").
    pub fn name(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Full => "full",
        }
    }
}

/// The default profile's cell of `method` on `system`: `(training samples, epochs)`.
///
/// DW4: 1,000 samples for 30 of the paper's 300 epochs, except E-NF, which gets 50: its NLL sits
/// on a plateau near 11.5 nats for the first 20-35 epochs and then falls below 8.5 within about
/// 15 epochs, and where in that window it leaves the plateau varies with the seed, the data and
/// the solver's step sequence (measured on the default data set: validation NLL 8.61 at epoch 30,
/// 8.42 at 40, 8.26 at 50; on an older data set 9.72 at 30 and 8.57 at 50), so 30 epochs would
/// report the plateau's timing rather than the model. LJ13: 1,000 samples for 4 of 300 epochs (an
/// LJ13 step costs 0.2-4 s for batch 100; 4 rather than 5 epochs keep the whole profile under
/// half an hour on 2 cores with E-NF's 50 on DW4). Batch size stays the paper's (100) and so does
/// the evaluation interval where it fits (every 5 epochs; the last epoch is always validated), so
/// a DW4 run selects among 6 (E-NF: 10) validated epochs and an LJ13 run validates once, at
/// its last epoch. `None` for QM9 positional, which
/// is not a Table 1 system ([`crate::table3`]).
pub fn reduced_protocol(method: FlowMethod, system: System) -> Option<(usize, usize)> {
    match (method, system) {
        (FlowMethod::Enf, System::Dw4) => Some((1_000, 50)),
        (_, System::Dw4) => Some((1_000, 30)),
        (_, System::Lj13) => Some((1_000, 4)),
        (_, System::Qm9Positional) => None,
    }
}

/// One of `count` shares of a reproduction: run `index` (0-based) takes the planned runs whose
/// position in the plan is `index` modulo `count`, so `count` machines (the tasks of a cluster job
/// array) split a reproduction deterministically and evenly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This share, `0 <= index < count`.
    pub index: usize,
    /// Number of shares.
    pub count: usize,
}

impl Shard {
    /// Whether the run at `position` of the plan belongs to this share.
    pub fn contains(&self, position: usize) -> bool {
        position.checked_rem(self.count) == Some(self.index)
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    /// Parses `i/n` (0-based `i < n`).
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = s
            .split_once('/')
            .and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if index < count => Ok(Shard { index, count }),
            _ => Err(format!(
                "--shard {s}: expected i/n with 0 <= i < n, e.g. 0/4 for the first of four shares"
            )),
        }
    }
}

/// What to reproduce.
#[derive(Debug, Clone)]
pub struct Table1Options {
    /// The protocol.
    pub profile: Profile,
    /// Methods (all six by default).
    pub methods: Vec<FlowMethod>,
    /// Systems.
    pub systems: Vec<System>,
    /// Training-set sizes; `None`: the profile's (the default profile's one per system, or the
    /// paper's four).
    pub n_train: Option<Vec<usize>>,
    /// Seeds; `None`: the profile's (0 for the default profile, 0, 1, 2 for the full one).
    pub seeds: Option<Vec<u64>>,
    /// Override of the epoch count (a reduced run), if any.
    pub epochs: Option<usize>,
    /// Run only this share of the plan (the table is still assembled from every result found).
    pub shard: Option<Shard>,
    /// Where run directories go ([`PlannedRun::run_dir`]) and the table files.
    pub runs_dir: PathBuf,
    /// Where data sets live (generated on first use).
    pub data_dir: PathBuf,
    /// Draw progress bars.
    pub progress: bool,
}

impl Table1Options {
    /// Options for `profile`: every method, both systems, the profile's sizes and seeds, runs
    /// under `runs/`, data under `data/`.
    pub fn new(profile: Profile) -> Self {
        Table1Options {
            profile,
            methods: FlowMethod::ALL.to_vec(),
            systems: vec![System::Dw4, System::Lj13],
            n_train: None,
            seeds: None,
            epochs: None,
            shard: None,
            runs_dir: PathBuf::from("runs"),
            data_dir: PathBuf::from("data"),
            progress: true,
        }
    }
}

/// One run of a reproduction.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// Its configuration (the paper's cell, with the profile's reductions).
    pub config: RunConfig,
    /// How it differs from the paper's protocol, in words; `None` for the paper's.
    pub reduction: Option<String>,
    /// Its run directory: [`run_dir`], with `-e<epochs>` appended for a reduced run.
    pub run_dir: PathBuf,
}

/// The runs of `options`, in table order (system, method as in the paper, size, seed); every
/// run, not only the shard's.
///
/// Errors: [`ExperimentError::Config`] for a size outside the paper's sweep or a system that is
/// not in Table 1 (QM9 positional: `reproduce-table3`).
pub fn plan(options: &Table1Options) -> Result<Vec<PlannedRun>, ExperimentError> {
    let mut runs = Vec::new();
    let seeds = options
        .seeds
        .clone()
        .unwrap_or_else(|| match options.profile {
            Profile::Default => vec![0],
            Profile::Full => vec![0, 1, 2],
        });
    for &system in &options.systems {
        if reduced_protocol(FlowMethod::Enf, system).is_none() {
            return Err(ExperimentError::Config {
                key: "systems".into(),
                message: format!("{system} is not a Table 1 system (see reproduce-table3)"),
            });
        }
        for method in FlowMethod::ALL
            .into_iter()
            .filter(|m| options.methods.contains(m))
        {
            let (reduced_n, reduced_epochs) = reduced_protocol(method, system).unwrap_or((0, 0)); // checked above
            let sizes = options
                .n_train
                .clone()
                .unwrap_or_else(|| match options.profile {
                    Profile::Default => vec![reduced_n],
                    Profile::Full => paper_sizes(system).to_vec(),
                });
            for &n_train in &sizes {
                for &seed in &seeds {
                    let mut config = RunConfig::paper_cell_for(method, system, n_train, seed)?;
                    config.data.path = Some(config.data_path(&options.data_dir));
                    let paper_epochs = config.training.epochs;
                    let epochs = options.epochs.or(match options.profile {
                        Profile::Default => Some(reduced_epochs),
                        Profile::Full => None,
                    });
                    let reduction = match epochs {
                        Some(e) if e != paper_epochs => {
                            config.training.epochs = e;
                            config.training.eval_every = config.training.eval_every.min(e);
                            Some(format!("{e} of the paper's {paper_epochs} epochs"))
                        }
                        _ => None,
                    };
                    let mut dir = run_dir(&options.runs_dir, method, system, n_train, seed);
                    if reduction.is_some() {
                        // Reduced runs never share a directory with the paper's protocol.
                        dir.as_mut_os_string()
                            .push(format!("-e{}", config.training.epochs));
                    }
                    runs.push(PlannedRun {
                        run_dir: dir,
                        config,
                        reduction,
                    });
                }
            }
        }
    }
    Ok(runs)
}

/// One cell of the table over its seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Method.
    pub method: FlowMethod,
    /// System.
    pub system: System,
    /// Training samples.
    pub n_train: usize,
    /// How the cell's runs differ from the paper's protocol, if they do.
    pub reduction: Option<String>,
    /// The finished runs, one per seed.
    pub runs: Vec<RunResult>,
    /// Planned seeds without a result yet (other shards, interrupted runs).
    pub missing_seeds: Vec<u64>,
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

    /// Mean NFE per training step over the runs.
    pub fn mean_nfe(&self) -> f64 {
        self.runs.iter().map(|r| r.mean_train_nfe).sum::<f64>() / self.runs.len().max(1) as f64
    }

    /// Wall time of the runs together, seconds.
    pub fn wall_seconds(&self) -> f64 {
        self.runs.iter().map(|r| r.wall_seconds).sum()
    }

    /// Whether the cell's runs may have been trained on different data: their recorded data
    /// digests ([`RunResult::data_digest`]) differ, or some runs recorded one and others (written
    /// before digests were recorded) did not. `--merge` assembles results from anywhere, so the
    /// table says so rather than averaging silently.
    pub fn mixed_data(&self) -> bool {
        let first = self.runs.first().map(|r| &r.data_digest);
        self.runs.iter().any(|r| Some(&r.data_digest) != first)
    }

    /// `seed: digest` of every run, the first 12 hex digits of the digest or "not recorded".
    fn data_summary(&self) -> String {
        self.runs
            .iter()
            .map(|r| {
                let digest = r
                    .data_digest
                    .as_deref()
                    .map_or("not recorded", |d| &d[..d.len().min(12)]);
                format!("seed {} {digest}", r.seed)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A markdown table row (see [`MARKDOWN_HEADER`]). The NLL column is the mean ± standard
    /// deviation over seeds, or for a single seed its test NLL ± the standard error over the
    /// test samples.
    pub fn markdown_row(&self) -> String {
        let paper = paper_nll(self.method, self.system, self.n_train)
            .map_or("-".into(), |p| format!("{p:.2}"));
        let ours = match self.runs.as_slice() {
            [] => "-".to_string(),
            [one] => format!("{:.2} ± {:.2}", one.test.nll, one.test.nll_std_err),
            _ => {
                let (mean, std) = self.mean_std();
                format!("{mean:.2} ± {std:.2}")
            }
        };
        let mut seeds = self.runs.len().to_string();
        if !self.missing_seeds.is_empty() {
            seeds += &format!(" ({} missing)", self.missing_seeds.len());
        }
        let epochs = self.runs.first().map_or(0, |r| r.config.training.epochs);
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.0} s | {} |",
            self.method.paper_name(),
            self.system.name(),
            self.n_train,
            ours,
            paper,
            seeds,
            epochs,
            self.mean_nfe(),
            self.wall_seconds(),
            self.reduction.as_deref().unwrap_or("paper's protocol"),
        )
    }
}

/// Header of the markdown table (± is the standard deviation over seeds, or the standard error
/// over the test samples for a single seed).
pub const MARKDOWN_HEADER: &str = "| method | system | training samples | test NLL (ours, nats) | paper | seeds | epochs | NFE/step | wall time | protocol |\n|---|---|---|---|---|---|---|---|---|---|";

/// A reproduced Table 1: the cells of a plan with every result found.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    /// The profile of the plan.
    pub profile: Profile,
    /// The cells, in table order.
    pub cells: Vec<Cell>,
}

impl Table {
    /// The table in markdown, with a line on the profile and, for reduced cells, how they are
    /// reduced.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "Table 1 ({} profile): test NLL in nats, ours beside the paper's.\n\n{MARKDOWN_HEADER}",
            self.profile.name()
        );
        for cell in &self.cells {
            out.push('\n');
            out.push_str(&cell.markdown_row());
        }
        out.push_str(
            "\n\n±: standard deviation over seeds; for a single seed, the standard error over the test samples.",
        );
        let reduced = self.cells.iter().filter(|c| c.reduction.is_some()).count();
        if reduced > 0 {
            out.push_str(&format!(
                "\n\n{reduced} of {} cells are reduced (column protocol): fewer epochs than the paper, one seed unless asked for more; their numbers are not the paper's protocol. `--full` runs it exactly.",
                self.cells.len()
            ));
        }
        for cell in self.cells.iter().filter(|c| c.mixed_data()) {
            out.push_str(&format!(
                "\n\n{} on {} with {} samples: the seeds' recorded data digests differ or are \
                 missing for some, so they may have been trained on different data files ({}).",
                cell.method.paper_name(),
                cell.system.name(),
                cell.n_train,
                cell.data_summary()
            ));
        }
        let missing: usize = self.cells.iter().map(|c| c.missing_seeds.len()).sum();
        if missing > 0 {
            out.push_str(&format!(
                "\n\n{missing} planned runs have no result yet (other shards or unfinished runs)."
            ));
        }
        let wall: f64 = self.cells.iter().map(Cell::wall_seconds).sum();
        out.push_str(&format!(
            "\n\nTraining and evaluation wall time, all runs: {wall:.0} s.\n"
        ));
        out
    }

    /// Writes `table1-<profile>.md` and `table1-<profile>.json` into `dir`, atomically. Returns
    /// the markdown path.
    ///
    /// Errors: [`ExperimentError::Io`].
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ExperimentError> {
        let stem = format!("table1-{}", self.profile.name());
        crate::results::write_table(dir, &stem, &self.markdown(), self)
    }
}

/// Runs this shard's share of the plan (every run when `options.shard` is `None`), skipping
/// finished runs and resuming interrupted ones, then assembles the table from every result
/// found ([`merge`]).
///
/// Errors: data generation, training and I/O errors; a finished run of another configuration
/// in a planned run directory ([`ExperimentError::Config`], never overwritten).
pub fn reproduce(options: &Table1Options) -> Result<Table, ExperimentError> {
    let planned = plan(options)?;
    let mine = planned
        .iter()
        .enumerate()
        .filter(|(i, _)| options.shard.is_none_or(|s| s.contains(*i)));
    // Each system's data set and its digest, loaded once.
    let mut datasets: Vec<(System, datasets::ParticleDataset, String)> = Vec::new();
    for (_, run) in mine {
        let system = run.config.data.system;
        if !datasets.iter().any(|(s, _, _)| *s == system) {
            let path = run.config.data.path.clone().unwrap_or_default();
            let dataset = ensure_dataset(&path, system)?;
            let digest = dataset.digest();
            datasets.push((system, dataset, digest));
        }
        let Some((_, dataset, digest)) = datasets.iter().find(|(s, _, _)| *s == system) else {
            continue;
        };
        let result_path = run.run_dir.join(files::RESULT);
        if let Some(done) = finished(run, &result_path)? {
            done.check_data(digest, &result_path)?;
            tracing::info!("finished already: {}", done.summary());
            continue;
        }
        tracing::info!(
            "training {} on {} with {} samples, seed {}, {} epochs{} -> {}",
            run.config.model.method.paper_name(),
            system.name(),
            run.config.data.n_train,
            run.config.training.seed,
            run.config.training.epochs,
            run.reduction
                .as_ref()
                .map_or(String::new(), |r| format!(" ({r})")),
            run.run_dir.display()
        );
        let result = train(&run.config, dataset, &run.run_dir, options.progress)?;
        tracing::info!("{}", result.summary());
    }
    merge(options)
}

/// The result of a planned run if it has finished with its planned configuration.
///
/// Errors: [`ExperimentError::Config`] for a finished run of another configuration, which is
/// never overwritten; I/O and parse errors of the result file.
pub(crate) fn finished(
    run: &PlannedRun,
    result_path: &Path,
) -> Result<Option<RunResult>, ExperimentError> {
    if !result_path.exists() {
        return Ok(None);
    }
    let done = RunResult::read(result_path)?;
    if !done.config.same_run(&run.config) {
        return Err(ExperimentError::Config {
            key: result_path.display().to_string(),
            message: "holds a finished run with another configuration; move it away or choose another --runs-dir".into(),
        });
    }
    Ok(Some(done))
}

/// Assembles the table of `options`' plan from the result files under `options.runs_dir`
/// (written by any number of shards or machines), without training anything; runs without a
/// result are listed as missing.
///
/// Errors: as [`reproduce`] for a result of another configuration; unreadable result files.
pub fn merge(options: &Table1Options) -> Result<Table, ExperimentError> {
    let mut cells: Vec<Cell> = Vec::new();
    for run in plan(options)? {
        let c = &run.config;
        let (method, system, n_train) = (c.model.method, c.data.system, c.data.n_train);
        let fresh = cells.last().is_none_or(|cell| {
            (cell.method, cell.system, cell.n_train) != (method, system, n_train)
        });
        if fresh {
            cells.push(Cell {
                method,
                system,
                n_train,
                reduction: run.reduction.clone(),
                runs: Vec::new(),
                missing_seeds: Vec::new(),
            });
        }
        let Some(cell) = cells.last_mut() else {
            continue;
        };
        match finished(&run, &run.run_dir.join(files::RESULT))? {
            Some(result) => cell.runs.push(result),
            None => cell.missing_seeds.push(c.training.seed),
        }
    }
    Ok(Table {
        profile: options.profile,
        cells,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::Evaluation;

    fn options(profile: Profile, runs_dir: &Path) -> Table1Options {
        Table1Options {
            runs_dir: runs_dir.to_path_buf(),
            ..Table1Options::new(profile)
        }
    }

    #[test]
    fn the_paper_numbers_are_where_facts_md_puts_them() {
        assert_eq!(paper_nll(FlowMethod::Enf, System::Dw4, 1_000), Some(8.15));
        assert_eq!(paper_nll(FlowMethod::Gnf, System::Lj13, 10), Some(43.56));
        assert_eq!(
            paper_nll(FlowMethod::GnfAttAug, System::Dw4, 1_000),
            Some(8.31)
        );
        assert_eq!(
            paper_nll(FlowMethod::SimpleDynamics, System::Lj13, 10_000),
            Some(32.99)
        );
        assert_eq!(paper_nll(FlowMethod::Enf, System::Dw4, 10), None);
    }

    #[test]
    fn profiles_plan_every_method_and_say_how_they_are_reduced() {
        let dir = Path::new("/nonexistent");
        let default = plan(&options(Profile::Default, dir)).unwrap();
        assert_eq!(default.len(), 12);
        for run in &default {
            let (n, epochs) = match (run.config.model.method, run.config.data.system) {
                (FlowMethod::Enf, System::Dw4) => (1_000, 50),
                (_, System::Dw4) => (1_000, 30),
                (_, System::Lj13) => (1_000, 4),
                (m, s) => panic!("{m:?} on {s:?} is not in the default profile"),
            };
            assert_eq!(run.config.data.n_train, n);
            assert_eq!(run.config.training.epochs, epochs);
            assert_eq!(
                run.reduction.as_deref(),
                Some(format!("{epochs} of the paper's 300 epochs").as_str())
            );
            assert!(run
                .run_dir
                .to_string_lossy()
                .ends_with(&format!("-e{epochs}")));
        }
        let methods: std::collections::HashSet<_> =
            default.iter().map(|r| r.config.model.method).collect();
        assert_eq!(methods.len(), 6);
        let full = plan(&options(Profile::Full, dir)).unwrap();
        assert_eq!(full.len(), 6 * 8 * 3);
        assert!(full.iter().all(|r| r.reduction.is_none()));
        let dirs: std::collections::HashSet<_> = full.iter().map(|r| &r.run_dir).collect();
        assert_eq!(dirs.len(), full.len(), "every run has its own directory");
    }

    #[test]
    fn shards_split_the_plan_without_overlap() {
        assert_eq!("2/5".parse::<Shard>(), Ok(Shard { index: 2, count: 5 }));
        for bad in ["5/5", "1", "a/b", "1/0"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        let n = plan(&options(Profile::Full, Path::new("/nonexistent")))
            .unwrap()
            .len();
        let shards: Vec<Shard> = (0..7).map(|index| Shard { index, count: 7 }).collect();
        for position in 0..n {
            let owners = shards.iter().filter(|s| s.contains(position)).count();
            assert_eq!(owners, 1, "run {position} belongs to exactly one shard");
        }
        let sizes: Vec<usize> = shards
            .iter()
            .map(|s| (0..n).filter(|&p| s.contains(p)).count())
            .collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
            "{sizes:?}"
        );
    }

    #[test]
    fn merge_assembles_the_results_found_and_lists_the_missing() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(Profile::Full, dir.path());
        opts.methods = vec![FlowMethod::Enf];
        opts.systems = vec![System::Dw4];
        opts.n_train = Some(vec![1_000]);
        let planned = plan(&opts).unwrap();
        assert_eq!(planned.len(), 3);
        let eval = |nll: f64| Evaluation {
            nll,
            nll_std_err: 0.01,
            n_samples: 1000,
            nfe: 20,
            accepted_steps: 3,
            rejected_steps: 0,
            seconds: 1.0,
        };
        for (run, nll) in planned.iter().zip([8.0, 8.2]) {
            let result = RunResult {
                method: "E-NF".into(),
                system: "DW4".into(),
                n_train: 1_000,
                seed: run.config.training.seed,
                best_epoch: 300,
                validation: eval(nll),
                test: eval(nll),
                train_steps: 3000,
                mean_train_nfe: 30.0,
                median_step_seconds: 0.5,
                wall_seconds: 100.0,
                config: run.config.clone(),
                data_digest: None,
            };
            result.write(&run.run_dir.join(files::RESULT)).unwrap();
        }
        let table = merge(&opts).unwrap();
        assert_eq!(table.cells.len(), 1);
        let cell = &table.cells[0];
        assert_eq!(cell.runs.len(), 2);
        assert_eq!(cell.missing_seeds, vec![2]);
        let (mean, std) = cell.mean_std();
        assert!((mean - 8.1).abs() < 1e-12, "{mean}");
        assert!((std - 0.02f64.sqrt()).abs() < 1e-12, "{std}");
        let md = table.markdown();
        assert!(
            md.contains("| E-NF | DW4 | 1000 | 8.10 ± 0.14 | 8.15 | 2 (1 missing) |"),
            "{md}"
        );
        assert!(!cell.mixed_data() && !md.contains("different data"), "{md}");
        let out = table.write(dir.path()).unwrap();
        assert!(out.exists() && dir.path().join("table1-full.json").exists());
        // Seeds trained on different data files: the table says which.
        let path = planned[1].run_dir.join(files::RESULT);
        let mut newer = RunResult::read(&path).unwrap();
        newer.data_digest = Some("0123456789abcdef".into());
        newer.write(&path).unwrap();
        let table = merge(&opts).unwrap();
        assert!(table.cells[0].mixed_data());
        let md = table.markdown();
        assert!(
            md.contains("E-NF on DW4 with 1000 samples: the seeds' recorded data digests differ or are missing for some, so they may have been trained on different data files (seed 0 not recorded, seed 1 0123456789ab)."),
            "{md}"
        );
        // A result of another configuration in a planned directory is an error, not reused.
        let mut other = RunResult::read(&planned[0].run_dir.join(files::RESULT)).unwrap();
        other.config.training.lr = 1.0;
        other
            .write(&planned[0].run_dir.join(files::RESULT))
            .unwrap();
        assert!(matches!(merge(&opts), Err(ExperimentError::Config { .. })));
    }
}
