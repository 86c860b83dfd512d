//! The paper's Table 2 (QM9: `-log p(x, h, M)` of test molecules, atom and molecule stability of
//! generated molecules): the E-NF from the authors' pretrained checkpoint, evaluated by this
//! crate; the GNF-attention baselines (GNF-att, GNF-att-aug), trained here with the reference's
//! protocol ([`super::protocol`]) or a reduction of it; and the data itself.
//!
//! Profiles: the default evaluates the E-NF's NLL on a seeded random subset of 1,000 test
//! molecules (Hutchinson trace, Gaussian probes), its exact-trace NLL on 4 (about a minute each
//! on a 2-core Intel Xeon) and the stability of 1,000 samples, and trains each baseline as
//! [`BaselineProtocol::DEFAULT`] says (3 x 32 networks, 2,048 training molecules, 3 epochs): 25
//! minutes in all on that machine. `--full` evaluates the whole test split (13,083 molecules)
//! with the Hutchinson trace, 100 with the exact trace and 10,000 samples as the paper, and
//! trains the baselines with the reference's protocol ([`BaselineProtocol::FULL`]: 78,200 steps
//! of batch 128 each, far beyond such a machine).
//! The NLL evaluations keep journals of their finished batches in
//! `<out_dir>/table2-journals/` ([`crate::qm9::journal`]) and the baselines' training runs live
//! in `<out_dir>/table2/<method>-<profile>-tol<tol>-seed<seed>/`: an interrupted run resumes
//! them, and a re-run with the same settings reads them back instead of computing them again.

use std::path::{Path, PathBuf};
use std::time::Instant;

use datasets::qm9::{ensure_qm9, write_xyz, StabilitySummary};
use flow::{Noise, TraceEstimator};
use ode::OdeSolver;
use serde::{Deserialize, Serialize};

use super::evaluate::{
    evaluate_nll, sample_molecules, seeded_subset, NllEvaluation, SampleEvaluation,
};
use super::model::{training_node_counts, Qm9Model};
use super::pretrained::{load_pretrained, PretrainedFiles};
use super::protocol::{train_with_validation, ValidatedRun, ValidatedRunConfig};
use super::run::Qm9RunConfig;
use crate::config::{FlowMethod, GradientMethod};
use crate::error::ExperimentError;

/// The paper's Table 2 row of a QM9 flow (FACTS.md section 4): NLL `-log p(x, h, M)` in nats,
/// stable atoms and stable molecules as fractions (of 10,000 samples). `None` for methods the
/// paper did not run on QM9 (GNF without attention, simple and kernel dynamics).
pub fn paper_row(method: FlowMethod) -> Option<(Option<f64>, f64, f64)> {
    match method {
        FlowMethod::GnfAtt => Some((Some(-28.2), 0.72, 0.003)),
        FlowMethod::GnfAttAug => Some((Some(-29.3), 0.75, 0.005)),
        FlowMethod::Enf => Some((Some(-59.7), 0.85, 0.049)),
        FlowMethod::Gnf | FlowMethod::SimpleDynamics | FlowMethod::KernelDynamics => None,
    }
}

/// Which protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table2Profile {
    /// Subsets (minutes).
    Default,
    /// The paper's sizes (hours on 2 cores).
    Full,
}

impl Table2Profile {
    /// `"default"` or `"full"`.
    pub fn name(self) -> &'static str {
        match self {
            Table2Profile::Default => "default",
            Table2Profile::Full => "full",
        }
    }
}

/// How the GNF baselines of Table 2 are trained, validated and tested. The paper gives no
/// training details for them; [`BaselineProtocol::FULL`] is the reference's command for its best
/// baseline (`main_qm9.py --nf 64 --ode_regularization 0.001 --batch_size 128 --dequantizer
/// argmax_variational --lr 5e-4 --model gnn_dynamics`, with `--data_augmentation True` for
/// GNF-att-aug) with the script's defaults (6 layers, 100 epochs, validation and test after every
/// epoch, the test NLL of the best-validation epoch); its gradients are by the adjoint method
/// (backpropagation through the solver at batch 128 does not fit in 24 GB).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BaselineProtocol {
    /// Training molecules: a seeded random subset of this many (`None`: all 100,000).
    pub n_train: Option<usize>,
    /// Training epochs.
    pub epochs: usize,
    /// Molecules per training batch.
    pub batch_size: usize,
    /// Layers of the GNN dynamics.
    pub n_layers: i64,
    /// Hidden features of the GNN dynamics.
    pub hidden_nf: i64,
    /// Learning rate (AdamW with AMSGrad, weight decay 1e-12).
    pub lr: f64,
    /// Backpropagation through the solver or the adjoint method.
    pub gradients: GradientMethod,
    /// Validation molecules after every epoch: a seeded subset of this many (`None`: all).
    pub n_val: Option<usize>,
    /// Test molecules of the best-validation epoch's NLL: a seeded subset (`None`: all).
    pub n_test: Option<usize>,
}

impl BaselineProtocol {
    /// The reference's protocol (see the type's documentation).
    pub const FULL: BaselineProtocol = BaselineProtocol {
        n_train: None,
        epochs: 100,
        batch_size: 128,
        n_layers: 6,
        hidden_nf: 64,
        lr: 5e-4,
        gradients: GradientMethod::Adjoint,
        n_val: None,
        n_test: None,
    };

    /// The default profile's reduction: Table 1's network size (3 x 32), 2,048 training
    /// molecules in batches of 32 for 3 epochs (192 steps, as Table 3's default) with backpropagation through the
    /// solver, validation on 250 and test on 500 molecules. Minutes of training: it shows that
    /// the pipeline trains, selects, evaluates and samples these models, not the paper's values.
    pub const DEFAULT: BaselineProtocol = BaselineProtocol {
        n_train: Some(2_048),
        epochs: 3,
        batch_size: 32,
        n_layers: 3,
        hidden_nf: 32,
        lr: 5e-4,
        gradients: GradientMethod::Backprop,
        n_val: Some(250),
        n_test: Some(500),
    };

    /// Checks the protocol before anything is trained: at least one epoch, layer, feature and
    /// molecule per batch, a finite positive learning rate, and no subset of zero molecules
    /// (training, validation or test).
    ///
    /// Errors: [`ExperimentError::Config`] naming the field (`baseline_protocol.n_test`, ...).
    pub fn validate(&self) -> Result<(), ExperimentError> {
        let refuse = |field: &str, message: &str| {
            Err(ExperimentError::Config {
                key: format!("baseline_protocol.{field}"),
                message: message.into(),
            })
        };
        let counts = [
            ("epochs", self.epochs as i64),
            ("batch_size", self.batch_size as i64),
            ("n_layers", self.n_layers),
            ("hidden_nf", self.hidden_nf),
        ];
        for (field, value) in counts {
            if value < 1 {
                return refuse(field, &format!("must be >= 1, got {value}"));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return refuse("lr", &format!("must be finite and > 0, got {}", self.lr));
        }
        let subsets = [
            ("n_train", self.n_train),
            ("n_val", self.n_val),
            ("n_test", self.n_test),
        ];
        for (field, n) in subsets {
            if n == Some(0) {
                return refuse(
                    field,
                    "a subset of 0 molecules (leave it out for all of them)",
                );
            }
        }
        Ok(())
    }

    /// The validated run of `method` with this protocol (argmax + variational dequantization
    /// and ActNorm as the E-NF, ODE regulariser 1e-3, adaptive gradient clipping).
    pub fn run_config(&self, method: FlowMethod, seed: u64, tol: f64) -> ValidatedRunConfig {
        let mut run = Qm9RunConfig {
            batch_size: self.batch_size,
            n_train: self.n_train,
            seed,
            tol,
            ..Qm9RunConfig::default()
        };
        run.model.method = method;
        run.model.egnn.n_layers = self.n_layers;
        run.model.egnn.hidden_nf = self.hidden_nf;
        run.train.lr = self.lr;
        run.train.gradients = self.gradients;
        ValidatedRunConfig {
            run,
            epochs: self.epochs,
            n_val: self.n_val,
            val_batch_size: 64,
        }
    }

    /// How this protocol differs from [`BaselineProtocol::FULL`], for the table ("full
    /// protocol" when it does not).
    pub fn describe(&self) -> String {
        let full = Self::FULL;
        let mut parts = Vec::new();
        if (self.n_layers, self.hidden_nf) != (full.n_layers, full.hidden_nf) {
            parts.push(format!(
                "{} x {} network instead of {} x {}",
                self.n_layers, self.hidden_nf, full.n_layers, full.hidden_nf
            ));
        }
        if let Some(n) = self.n_train {
            parts.push(format!("{n} of 100000 training molecules"));
        }
        if self.batch_size != full.batch_size {
            parts.push(format!("batch {}", self.batch_size));
        }
        if self.epochs != full.epochs {
            parts.push(format!("{} of {} epochs", self.epochs, full.epochs));
        }
        if self.gradients != full.gradients {
            parts.push(format!("gradients by {:?}", self.gradients).to_lowercase());
        }
        if self.lr != full.lr {
            parts.push(format!("lr {:e}", self.lr));
        }
        if let Some(n) = self.n_val {
            parts.push(format!("validation on {n}"));
        }
        if let Some(n) = self.n_test {
            parts.push(format!("test on {n} molecules"));
        }
        if parts.is_empty() {
            "full protocol".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A GNF baseline trained and evaluated by [`reproduce_table2`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineResult {
    /// The method.
    pub method: FlowMethod,
    /// How it was trained.
    pub protocol: BaselineProtocol,
    /// The training run: best epoch, validation history, steps, NFE, times.
    pub training: ValidatedRun,
    /// The best-validation parameters' test NLL (Hutchinson, Gaussian probes).
    pub nll: NllEvaluation,
    /// Their samples' stability.
    pub samples: SampleEvaluation,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Table2Options {
    /// The profile (sets the sizes below unless they are overridden).
    pub profile: Table2Profile,
    /// Folder of the pretrained checkpoint.
    pub pretrained: PathBuf,
    /// The QM9 file (made on first use).
    pub data: PathBuf,
    /// Where the table, its JSON and the sampled molecules go.
    pub out_dir: PathBuf,
    /// Test molecules for the Hutchinson NLL (`None` = the whole split).
    pub n_nll: Option<usize>,
    /// Test molecules for the exact-trace NLL (0: skip it).
    pub n_exact: usize,
    /// Molecules to sample.
    pub n_samples: usize,
    /// Seed of subsets, dequantization noise, probes and samples (and of the baselines'
    /// training).
    pub seed: u64,
    /// dopri5 rtol = atol (the paper: 1e-4).
    pub tol: f64,
    /// The baselines to train and evaluate, of [`FlowMethod::GnfAtt`] and
    /// [`FlowMethod::GnfAttAug`] (the paper's rows); empty: none.
    pub baselines: Vec<FlowMethod>,
    /// How the baselines are trained and tested.
    pub baseline_protocol: BaselineProtocol,
    /// Progress callback target: draw bars on stderr.
    pub progress: bool,
}

impl Table2Options {
    /// The options of a profile with the checkpoint in `pretrained`.
    pub fn new(profile: Table2Profile, pretrained: PathBuf) -> Self {
        let (n_nll, n_exact, n_samples, baseline_protocol) = match profile {
            Table2Profile::Default => (Some(1_000), 4, 1_000, BaselineProtocol::DEFAULT),
            Table2Profile::Full => (None, 100, 10_000, BaselineProtocol::FULL),
        };
        Table2Options {
            profile,
            pretrained,
            data: PathBuf::from("data/qm9.h5"),
            out_dir: PathBuf::from("runs"),
            n_nll,
            n_exact,
            n_samples,
            seed: 0,
            tol: 1e-4,
            baselines: vec![FlowMethod::GnfAtt, FlowMethod::GnfAttAug],
            baseline_protocol,
            progress: true,
        }
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table2Row {
    /// The method, as the paper names it.
    pub method: String,
    /// Where our numbers come from (or why there are none).
    pub source: String,
    /// Our NLL (Hutchinson) and its standard error, nats per molecule.
    pub nll: Option<(f64, f64)>,
    /// Our stable atoms / molecules, fractions.
    pub stability: Option<(f64, f64)>,
    /// The paper's NLL, stable atoms and stable molecules (fractions).
    pub paper: (Option<f64>, f64, f64),
}

/// The table with the evaluations behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Table2 {
    /// The profile.
    pub profile: Table2Profile,
    /// The rows, in the paper's order.
    pub rows: Vec<Table2Row>,
    /// The E-NF's Hutchinson NLL evaluation.
    pub nll_hutchinson: NllEvaluation,
    /// The E-NF's exact-trace NLL evaluation (`None` when skipped).
    pub nll_exact: Option<NllEvaluation>,
    /// The E-NF's samples.
    pub samples: SampleEvaluation,
    /// The GNF baselines trained and evaluated by this run.
    #[serde(default)]
    pub baselines: Vec<BaselineResult>,
    /// Stability of the data (all molecules).
    pub data: StabilitySummary,
    /// dopri5 rtol = atol of the evaluations.
    pub tol: f64,
    /// Wall time, seconds.
    pub seconds: f64,
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

impl Table2 {
    /// The table as markdown, ours beside the paper's, with the profile and the evaluation sizes.
    pub fn markdown(&self) -> String {
        let mut s =
            format!(
            "QM9 (Table 2), profile `{}`: NLL = -log p(x, h, M) in nats per molecule over {} test \
             molecules (Hutchinson, Gaussian probes; {}), stability of {} sampled molecules; \
             dopri5 rtol = atol = {:e}. Wall time {:.0} s.\n\n",
            self.profile.name(),
            self.nll_hutchinson.n_molecules,
            self.nll_exact.as_ref().map_or("no exact-trace evaluation".into(), |e| format!(
                "exact trace on a second seeded subset of {} molecules: {:.2} +- {:.2}",
                e.n_molecules, e.nll, e.nll_std_err
            )),
            self.samples.stability.molecules,
            self.tol,
            self.seconds
        );
        let resumed = self.nll_hutchinson.resumed_batches
            + self.nll_exact.as_ref().map_or(0, |e| e.resumed_batches);
        if resumed > 0 {
            s.push_str(&format!(
                "{resumed} batches of the NLL evaluations were read back from their journals \
                 (`table2-journals/`, written by an earlier, interrupted or finished run with \
                 the same settings), not evaluated again.\n\n"
            ));
        }
        for b in &self.baselines {
            s.push_str(&format!(
                "{}: trained here, {}; {} steps, {:.1} NFE and {:.2} s per step ({:.0} s of \
                 training, {:.0} s of validation); validation NLL by epoch: {}; best epoch {}. \
                 Test NLL evaluated at {:.1} molecules/s, sampling at {:.1} molecules/s.\n\n",
                b.method.paper_name(),
                b.protocol.describe(),
                b.training.steps,
                b.training.nfe_per_step,
                b.training.train_seconds / b.training.steps.max(1) as f64,
                b.training.train_seconds,
                b.training.validation_seconds,
                b.training
                    .history
                    .iter()
                    .map(|v| format!("{:.2}", v.nll))
                    .collect::<Vec<_>>()
                    .join(", "),
                b.training.best_epoch,
                b.nll.molecules_per_second,
                b.samples.molecules_per_second,
            ));
        }
        s.push_str("| method | NLL ours | NLL paper | atom stable ours | paper | mol stable ours | paper | source |\n");
        s.push_str("|---|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            let nll = r
                .nll
                .map_or("-".into(), |(m, e)| format!("{m:.2} +- {e:.2}"));
            let (a, m) = r
                .stability
                .map_or(("-".into(), "-".into()), |(a, m)| (pct(a), pct(m)));
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                r.method,
                nll,
                r.paper.0.map_or("-".into(), |v| format!("{v:.1}")),
                a,
                pct(r.paper.1),
                m,
                pct(r.paper.2),
                r.source
            ));
        }
        s
    }

    /// Writes `table2-<profile>.md` and `.json` into `dir` atomically; returns the markdown path.
    ///
    /// Errors: [`ExperimentError::Data`] for I/O failures.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ExperimentError> {
        let stem = format!("table2-{}", self.profile.name());
        crate::results::write_table(dir, &stem, &self.markdown(), self)
    }
}

/// Runs the evaluations of `options` and assembles the table; the sampled molecules go to
/// `<out_dir>/table2-<profile>-samples.xyz`, a picture of six stable ones to `...-samples.png`.
///
/// Errors: data, checkpoint and evaluation errors.
pub fn reproduce_table2(options: &Table2Options) -> Result<Table2, ExperimentError> {
    let start = Instant::now();
    // Every check before any work: a bad baseline protocol or method would otherwise surface
    // only after the E-NF's evaluation and a baseline's training.
    if !options.baselines.is_empty() {
        options.baseline_protocol.validate()?;
    }
    for &method in &options.baselines {
        check_baseline(method)?;
    }
    let ds = ensure_qm9(&options.data, None)?;
    let nodes = training_node_counts(&ds)?;
    let model = load_pretrained(
        &PretrainedFiles::in_dir(&options.pretrained),
        nodes,
        OdeSolver::dopri5(options.tol, options.tol),
        tch::Device::Cpu,
    )?;
    let test = &ds.splits.test;
    let bar = |n: usize, what: &str| {
        let b = if options.progress {
            indicatif::ProgressBar::new(n as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        b.set_message(what.to_string());
        b
    };
    // Journals of the NLL evaluations: an interrupted run resumes them, a finished one is
    // read back (the journal's header must match: same checkpoint, molecules, seed, tolerance).
    // The settings are in the name, so another subset size or tolerance gets its own journal.
    let journal = |trace: &str, n: usize| -> PathBuf {
        options.out_dir.join("table2-journals").join(format!(
            "{}-{trace}-n{n}-tol{:e}-seed{}.jsonl",
            options.profile.name(),
            options.tol,
            options.seed
        ))
    };
    let rows = seeded_subset(test, options.n_nll.unwrap_or(test.len()), options.seed);
    tracing::info!("QM9 NLL (Hutchinson) of {} test molecules", rows.len());
    let b = bar(rows.len(), "NLL");
    let hutch = evaluate_nll(
        &model,
        &ds,
        &rows,
        64,
        TraceEstimator::Hutchinson(Noise::Gaussian),
        options.seed,
        Some(&journal("hutchinson", rows.len())),
        |d| b.set_position(d as u64),
    )?;
    b.finish_and_clear();
    let exact = if options.n_exact == 0 {
        None
    } else {
        let exact_rows = seeded_subset(test, options.n_exact, options.seed + 1);
        tracing::info!(
            "QM9 NLL (exact trace) of {} test molecules",
            exact_rows.len()
        );
        let b = bar(exact_rows.len(), "NLL exact");
        let e = evaluate_nll(
            &model,
            &ds,
            &exact_rows,
            2,
            TraceEstimator::Exact,
            options.seed,
            Some(&journal("exact", exact_rows.len())),
            |d| b.set_position(d as u64),
        )?;
        b.finish_and_clear();
        Some(e)
    };
    tracing::info!("sampling {} molecules", options.n_samples);
    let b = bar(options.n_samples, "samples");
    let (molecules, samples) =
        sample_molecules(&model, options.n_samples, 100, options.seed, |d| {
            b.set_position(d as u64)
        })?;
    b.finish_and_clear();
    let xyz = options
        .out_dir
        .join(format!("table2-{}-samples.xyz", options.profile.name()));
    let finite = write_samples(&xyz, molecules, "E-NF (pretrained)", options.seed)?;
    // A picture of the first six stable samples (or of the first six when none is).
    let stable: Vec<_> = finite
        .iter()
        .filter(|m| m.stability().is_ok_and(|s| s.is_stable()))
        .take(6)
        .cloned()
        .collect();
    let shown = if stable.is_empty() {
        finite.iter().take(6).cloned().collect()
    } else {
        stable
    };
    if !shown.is_empty() {
        super::render::render_png(&xyz.with_extension("png"), &shown, 3, 260)?;
    }
    let mut baselines = Vec::new();
    for &method in &options.baselines {
        let label = format!("{}-hutchinson", method.name());
        baselines.push(train_and_evaluate_baseline(
            method,
            options,
            &ds,
            &|n| journal(&label, n),
            &bar,
        )?);
    }
    let data = ds.stability(0..ds.len())?;
    let baseline_row = |method: FlowMethod, name: &str| {
        let paper = paper_row(method).expect("a paper row");
        match baselines.iter().find(|b| b.method == method) {
            Some(b) => Table2Row {
                method: name.into(),
                source: format!(
                    "trained here ({}; best validation epoch {} of {}), {} test molecules",
                    b.protocol.describe(),
                    b.training.best_epoch,
                    b.protocol.epochs,
                    b.nll.n_molecules
                ),
                nll: Some((b.nll.nll, b.nll.nll_std_err)),
                stability: Some((
                    b.samples.stability.atom_fraction(),
                    b.samples.stability.molecule_fraction(),
                )),
                paper,
            },
            None => Table2Row {
                method: name.into(),
                source: format!("not run (add it with `--baselines {}`)", method.name()),
                nll: None,
                stability: None,
                paper,
            },
        }
    };
    let rows = vec![
        baseline_row(FlowMethod::GnfAtt, "GNF-attention"),
        baseline_row(FlowMethod::GnfAttAug, "GNF-attention-augmentation"),
        Table2Row {
            method: "E-NF".into(),
            source: "the authors' pretrained checkpoint, evaluated here".into(),
            nll: Some((hutch.nll, hutch.nll_std_err)),
            stability: Some((
                samples.stability.atom_fraction(),
                samples.stability.molecule_fraction(),
            )),
            paper: paper_row(FlowMethod::Enf).expect("a paper row"),
        },
        Table2Row {
            method: "data".into(),
            source: format!("all {} molecules of {}", ds.len(), options.data.display()),
            nll: None,
            stability: Some((data.atom_fraction(), data.molecule_fraction())),
            paper: (None, 0.99, 0.952),
        },
    ];
    Ok(Table2 {
        profile: options.profile,
        rows,
        nll_hutchinson: hutch,
        nll_exact: exact,
        samples,
        baselines,
        data,
        tol: options.tol,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Writes the finite ones of `molecules` to `path` as XYZ (each frame's comment names `label`,
/// the sample's index and seed and whether it is stable) and returns them.
fn write_samples(
    path: &Path,
    molecules: Vec<datasets::qm9::Molecule>,
    label: &str,
    seed: u64,
) -> Result<Vec<datasets::qm9::Molecule>, ExperimentError> {
    let finite: Vec<_> = molecules
        .into_iter()
        .filter(|m| m.positions.iter().all(|v| v.is_finite()))
        .collect();
    write_xyz(path, &finite, |k| {
        let stable = finite[k]
            .stability()
            .map(|s| s.is_stable())
            .unwrap_or(false);
        format!("{label} sample {k}, seed {seed}; stable: {stable}")
    })?;
    Ok(finite)
}

/// Refuses a method that is not one of Table 2's baselines (GNF-att, GNF-att-aug).
///
/// Errors: [`ExperimentError::Config`] with key `baselines`.
fn check_baseline(method: FlowMethod) -> Result<(), ExperimentError> {
    if matches!(method, FlowMethod::GnfAtt | FlowMethod::GnfAttAug) {
        return Ok(());
    }
    Err(ExperimentError::Config {
        key: "baselines".into(),
        message: format!(
            "Table 2's baselines are gnf_att and gnf_att_aug, not {}",
            method.name()
        ),
    })
}

/// Trains (or resumes, or reads back) `method` with `options.baseline_protocol` in
/// `<out_dir>/table2/<method>-<profile>-tol<tol>-seed<seed>/`, then evaluates its best-validation
/// parameters: the NLL of a seeded subset of test molecules (its journal at `journal(n)` for
/// `n` molecules) and the stability of `options.n_samples` samples, written to
/// `<out_dir>/table2-<profile>-<method>-samples.xyz`.
///
/// Errors: [`ExperimentError::Config`] for a method other than GNF-att and GNF-att-aug; as
/// [`train_with_validation`], [`evaluate_nll`] and [`sample_molecules`].
fn train_and_evaluate_baseline(
    method: FlowMethod,
    options: &Table2Options,
    ds: &datasets::qm9::Qm9Dataset,
    journal: &dyn Fn(usize) -> PathBuf,
    bar: &dyn Fn(usize, &str) -> indicatif::ProgressBar,
) -> Result<BaselineResult, ExperimentError> {
    check_baseline(method)?;
    let protocol = options.baseline_protocol;
    let config = protocol.run_config(method, options.seed, options.tol);
    let run_dir = options.out_dir.join("table2").join(format!(
        "{}-{}-tol{:e}-seed{}",
        method.name(),
        options.profile.name(),
        options.tol,
        options.seed
    ));
    let per_epoch = super::protocol::steps_per_epoch(&config.run, ds);
    tracing::info!(
        "{}: training in {} ({}; {} steps per epoch)",
        method.paper_name(),
        run_dir.display(),
        protocol.describe(),
        per_epoch
    );
    let b = bar(
        per_epoch * protocol.epochs,
        &format!("{} training", method.name()),
    );
    let (model, training): (Qm9Model, ValidatedRun) = train_with_validation(
        &config,
        ds,
        &run_dir,
        |step, r| {
            b.set_position(step as u64);
            b.set_message(format!("{} training, NLL {:.2}", method.name(), r.nll));
        },
        |v| {
            tracing::info!(
                "{} epoch {}: validation NLL {:.2} +- {:.2}",
                method.paper_name(),
                v.epoch,
                v.nll,
                v.nll_std_err
            )
        },
    )?;
    b.finish_and_clear();
    let test = &ds.splits.test;
    let rows = seeded_subset(test, protocol.n_test.unwrap_or(test.len()), options.seed);
    let b = bar(rows.len(), &format!("{} NLL", method.name()));
    let nll = evaluate_nll(
        &model,
        ds,
        &rows,
        64,
        TraceEstimator::Hutchinson(Noise::Gaussian),
        options.seed,
        Some(&journal(rows.len())),
        |d| b.set_position(d as u64),
    )?;
    b.finish_and_clear();
    let b = bar(options.n_samples, &format!("{} samples", method.name()));
    let (molecules, samples) =
        sample_molecules(&model, options.n_samples, 100, options.seed, |d| {
            b.set_position(d as u64)
        })?;
    b.finish_and_clear();
    let xyz = options.out_dir.join(format!(
        "table2-{}-{}-samples.xyz",
        options.profile.name(),
        method.name()
    ));
    write_samples(&xyz, molecules, method.paper_name(), options.seed)?;
    Ok(BaselineResult {
        method,
        protocol,
        training,
        nll,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_key(protocol: BaselineProtocol) -> String {
        match protocol.validate() {
            Err(ExperimentError::Config { key, .. }) => key,
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn baseline_protocols_are_checked_before_training() {
        BaselineProtocol::FULL.validate().unwrap();
        BaselineProtocol::DEFAULT.validate().unwrap();
        let p = BaselineProtocol::DEFAULT;
        let cases = [
            (
                BaselineProtocol {
                    n_test: Some(0),
                    ..p
                },
                "baseline_protocol.n_test",
            ),
            (
                BaselineProtocol {
                    n_val: Some(0),
                    ..p
                },
                "baseline_protocol.n_val",
            ),
            (
                BaselineProtocol {
                    n_train: Some(0),
                    ..p
                },
                "baseline_protocol.n_train",
            ),
            (
                BaselineProtocol { epochs: 0, ..p },
                "baseline_protocol.epochs",
            ),
            (
                BaselineProtocol { batch_size: 0, ..p },
                "baseline_protocol.batch_size",
            ),
            (
                BaselineProtocol { hidden_nf: 0, ..p },
                "baseline_protocol.hidden_nf",
            ),
            (
                BaselineProtocol { lr: f64::NAN, ..p },
                "baseline_protocol.lr",
            ),
        ];
        for (protocol, key) in cases {
            assert_eq!(refused_key(protocol), key);
        }
        assert!(check_baseline(FlowMethod::GnfAtt).is_ok());
        assert!(matches!(
            check_baseline(FlowMethod::Enf),
            Err(ExperimentError::Config { key, .. }) if key == "baselines"
        ));
    }
}
