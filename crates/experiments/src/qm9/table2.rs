//! The paper's Table 2 (QM9: `-log p(x, h, M)` of test molecules, atom and molecule stability of
//! generated molecules) for the models available here: the E-NF from the authors' pretrained
//! checkpoint, evaluated by this crate, and the data itself.
//!
//! Profiles: the default evaluates the NLL on a seeded random subset of 1,000 test molecules
//! (Hutchinson trace, Gaussian probes), the exact-trace NLL on 10 (93-111 s each here), and the stability of
//! 1,000 samples (about 30 minutes on 2 cores); `--full` the whole test split (13,083 molecules)
//! with the Hutchinson trace, 100 with the exact trace, and 10,000 samples as the paper (about 6
//! hours here).
//! Both NLL evaluations keep journals of their finished batches in
//! `<out_dir>/table2-journals/` ([`crate::qm9::journal`]): an interrupted run resumes them, and a
//! re-run with the same settings reads them back instead of evaluating again.
//! The GNF-attention rows need QM9-trained GNF models (`enf qm9-train --method gnf_att` or
//! `gnf_att_aug`, [`crate::qm9::Qm9ModelConfig::method`]); no profile trains them yet, so they
//! are listed with the paper's numbers only.

use std::path::{Path, PathBuf};
use std::time::Instant;

use datasets::qm9::{ensure_qm9, write_xyz, StabilitySummary};
use flow::{Noise, TraceEstimator};
use ode::OdeSolver;
use serde::{Deserialize, Serialize};

use super::evaluate::{
    evaluate_nll, sample_molecules, seeded_subset, NllEvaluation, SampleEvaluation,
};
use super::model::training_node_counts;
use super::pretrained::{load_pretrained, PretrainedFiles};
use crate::config::FlowMethod;
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
    /// Seed of subsets, dequantization noise, probes and samples.
    pub seed: u64,
    /// dopri5 rtol = atol (the paper: 1e-4).
    pub tol: f64,
    /// Progress callback target: draw bars on stderr.
    pub progress: bool,
}

impl Table2Options {
    /// The options of a profile with the checkpoint in `pretrained`.
    pub fn new(profile: Table2Profile, pretrained: PathBuf) -> Self {
        let (n_nll, n_exact, n_samples) = match profile {
            Table2Profile::Default => (Some(1_000), 10, 1_000),
            Table2Profile::Full => (None, 100, 10_000),
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
    let journal = |trace: &str, n: usize| {
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
    let finite: Vec<_> = molecules
        .into_iter()
        .filter(|m| m.positions.iter().all(|v| v.is_finite()))
        .collect();
    let xyz = options
        .out_dir
        .join(format!("table2-{}-samples.xyz", options.profile.name()));
    write_xyz(&xyz, &finite, |k| {
        let stable = finite[k]
            .stability()
            .map(|s| s.is_stable())
            .unwrap_or(false);
        format!(
            "E-NF (pretrained) sample {k}, seed {}; stable: {stable}",
            options.seed
        )
    })?;
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
    let data = ds.stability(0..ds.len())?;
    let rows = vec![
        Table2Row {
            method: "GNF-attention".into(),
            source: "not run: no trained model in this profile (train one with \
                     `enf qm9-train --method gnf_att`)"
                .into(),
            nll: None,
            stability: None,
            paper: paper_row(FlowMethod::GnfAtt).expect("a paper row"),
        },
        Table2Row {
            method: "GNF-attention-augmentation".into(),
            source: "not run: as above (`enf qm9-train --method gnf_att_aug`)".into(),
            nll: None,
            stability: None,
            paper: paper_row(FlowMethod::GnfAttAug).expect("a paper row"),
        },
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
        data,
        tol: options.tol,
        seconds: start.elapsed().as_secs_f64(),
    })
}
