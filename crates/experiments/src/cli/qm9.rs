//! The `enf qm9-*` commands: the QM9 data set, and evaluation and sampling of a QM9 E-NF (the
//! authors' pretrained checkpoint or one trained here).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use datasets::qm9::{ensure_qm9, write_xyz, Qm9Dataset};
use experiments::qm9::{
    evaluate_nll, load_pretrained, sample_molecules, seeded_subset, PretrainedFiles, Qm9Model,
};
use flow::{Noise, TraceEstimator};
use ode::OdeSolver;

/// Where the data set and the model come from.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Folder of a pretrained checkpoint of the original implementation (flow.safetensors,
    /// dequantizer.safetensors, args.json), e.g. ../shared/data/pretrained-qm9.
    #[arg(long, conflicts_with = "run_dir", required_unless_present = "run_dir")]
    pub pretrained: Option<PathBuf>,
    /// Or the directory of a model trained by `enf qm9-train`.
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// The QM9 file (made on first use).
    #[arg(long, default_value = "data/qm9.h5")]
    pub data: PathBuf,
    /// rtol = atol of the dopri5 solver (the paper: 1e-4).
    #[arg(long, default_value_t = 1e-4)]
    pub tol: f64,
    /// libtorch threads (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
}

/// `enf qm9-evaluate`.
#[derive(Args, Debug)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Split: train, val or test.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Evaluate a seeded random subset of this many molecules (default: the whole split).
    #[arg(long)]
    pub n: Option<usize>,
    /// Trace: gaussian or rademacher (Hutchinson) or exact.
    #[arg(long, default_value = "gaussian")]
    pub trace: String,
    /// Molecules per batch (exact traces replicate each molecule 9 x atoms times: keep it small).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Seed of the subset, the dequantization noise and the probes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Journal of finished batches (JSON lines): written as the evaluation goes, and an
    /// interrupted evaluation with the same settings resumes from it. Refused if it was written
    /// for another model, subset, trace, batch size, seed or tolerance.
    #[arg(long)]
    pub journal: Option<PathBuf>,
}

/// `enf qm9-sample`.
#[derive(Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Number of molecules.
    #[arg(long, default_value_t = 1000)]
    pub n: usize,
    /// Molecules per batch.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Seed of the atom counts and the latent draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the molecules to this XYZ file (one frame per molecule).
    #[arg(long)]
    pub xyz: Option<PathBuf>,
    /// Also write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The data set and the pretrained model with p(M) from the training split.
fn load(args: &ModelArgs) -> Result<(Qm9Dataset, Qm9Model)> {
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let ds = ensure_qm9(&args.data, None)
        .with_context(|| format!("QM9 data set {}", args.data.display()))?;
    let model = match (&args.pretrained, &args.run_dir) {
        (Some(dir), _) => load_pretrained(
            &PretrainedFiles::in_dir(dir),
            experiments::qm9::model::training_node_counts(&ds)?,
            OdeSolver::dopri5(args.tol, args.tol),
            tch::Device::Cpu,
        )?,
        (None, Some(dir)) => {
            let mut m = experiments::qm9::run::load_trained(dir, &ds)?;
            m.flow.solver = OdeSolver::dopri5(args.tol, args.tol);
            m
        }
        (None, None) => anyhow::bail!("give --pretrained or --run-dir"),
    };
    Ok((ds, model))
}

/// "Paper (<method>): <figures>" for the model's method (its Table 2 row), or a note that the
/// paper has no QM9 row for it.
fn paper_note(model: &Qm9Model, figures: impl Fn((Option<f64>, f64, f64)) -> String) -> String {
    let method = model.config.method;
    match experiments::qm9::table2::paper_row(method) {
        Some(row) => format!("Paper ({}): {}", method.paper_name(), figures(row)),
        None => format!("(the paper has no QM9 row for {})", method.paper_name()),
    }
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    datasets::atomic::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// `enf qm9-data`: makes (or checks) the file and prints its figures.
pub fn data(path: &Path) -> Result<()> {
    let start = std::time::Instant::now();
    let ds = ensure_qm9(path, None)?;
    let counts = ds.element_counts(0..ds.len())?;
    let st = ds.stability(0..ds.len())?;
    println!(
        "{}: {} molecules; split {} / {} / {}; positional (19 atoms) {} / {} / {}",
        path.display(),
        ds.len(),
        ds.splits.train.len(),
        ds.splits.val.len(),
        ds.splits.test.len(),
        ds.positional.train.len(),
        ds.positional.val.len(),
        ds.positional.test.len()
    );
    println!(
        "atoms H {} C {} N {} O {} F {}; stable atoms {:.2}%, stable molecules {:.2}% ({:.1} s)",
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        100.0 * st.atom_fraction(),
        100.0 * st.molecule_fraction(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `enf qm9-evaluate`.
pub fn evaluate(args: &EvaluateArgs) -> Result<()> {
    let (ds, model) = load(&args.model)?;
    let split = match args.split.as_str() {
        "train" => &ds.splits.train,
        "val" => &ds.splits.val,
        "test" => &ds.splits.test,
        other => anyhow::bail!("--split {other}: expected train, val or test"),
    };
    let trace = match args.trace.as_str() {
        "exact" => TraceEstimator::Exact,
        "gaussian" => TraceEstimator::Hutchinson(Noise::Gaussian),
        "rademacher" => TraceEstimator::Hutchinson(Noise::Rademacher),
        other => anyhow::bail!("--trace {other}: expected gaussian, rademacher or exact"),
    };
    let rows = seeded_subset(split, args.n.unwrap_or(split.len()), args.seed);
    let batch_size = args.batch_size.unwrap_or(match trace {
        TraceEstimator::Exact => 2,
        _ => 64,
    });
    let bar = indicatif::ProgressBar::new(rows.len() as u64);
    let eval = evaluate_nll(
        &model,
        &ds,
        &rows,
        batch_size,
        trace,
        args.seed,
        args.journal.as_deref(),
        |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    println!(
        "QM9 {} split, {} molecules (seed {}), trace {:?}, rtol = atol = {}: NLL {:.2} +- {:.2} nats \
         (log p_Z {:.2}, log det {:.2}, log q {:.2}, log p(M) {:.2}); {:.1} NFE per batch; {:.0} s, \
         {:.2} molecules/s. {}",
        args.split,
        eval.n_molecules,
        args.seed,
        trace,
        args.model.tol,
        eval.nll,
        eval.nll_std_err,
        eval.mean_log_pz,
        eval.mean_log_det,
        eval.mean_log_q,
        eval.mean_log_p_m,
        eval.nfe_per_batch,
        eval.seconds,
        eval.molecules_per_second,
        paper_note(&model, |(nll, _, _)| match nll {
            Some(nll) => format!("{nll}"),
            None => "-".into(),
        })
    );
    if let Some(path) = &args.json {
        write_json(path, &eval)?;
    }
    Ok(())
}

/// `enf qm9-sample`.
pub fn sample(args: &SampleArgs) -> Result<()> {
    let (ds, model) = load(&args.model)?;
    let bar = indicatif::ProgressBar::new(args.n as u64);
    let (molecules, eval) = sample_molecules(&model, args.n, args.batch_size, args.seed, |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    println!(
        "{} sampled molecules (seed {}): {:.1}% stable atoms, {:.1}% stable molecules, {} not \
         finite; {:.1} NFE per batch; {:.0} s, {:.2} molecules/s. {}",
        args.n,
        args.seed,
        100.0 * eval.stability.atom_fraction(),
        100.0 * eval.stability.molecule_fraction(),
        eval.non_finite,
        eval.nfe_per_batch,
        eval.seconds,
        eval.molecules_per_second,
        paper_note(&model, |(_, atoms, molecules)| format!(
            "{:.0}% / {:.1}%",
            100.0 * atoms,
            100.0 * molecules
        ))
    );
    let finite_samples: Vec<_> = molecules
        .iter()
        .filter(|m| m.positions.iter().all(|v| v.is_finite()))
        .cloned()
        .collect();
    let test: Vec<_> = ds
        .splits
        .test
        .iter()
        .map(|&r| datasets::qm9::Molecule {
            atomic_numbers: ds.molecule_atomic_numbers(r).unwrap_or_default().to_vec(),
            positions: ds.molecule_positions(r).unwrap_or_default().to_vec(),
        })
        .collect();
    if !finite_samples.is_empty() {
        println!(
            "relative-distance Jensen-Shannon divergence of the samples against the test split: {:.4}",
            datasets::qm9::relative_distance_js(&finite_samples, &test)?
        );
    }
    if let Some(path) = &args.xyz {
        let finite: Vec<_> = molecules
            .iter()
            .filter(|m| m.positions.iter().all(|v| v.is_finite()))
            .cloned()
            .collect();
        write_xyz(path, &finite, |k| {
            let st = finite[k].stability().ok();
            format!(
                "enf-rs sample {k}; stable: {}",
                st.map_or("?".into(), |s| s.is_stable().to_string())
            )
        })?;
        println!("wrote {} molecules to {}", finite.len(), path.display());
    }
    if let Some(path) = &args.json {
        write_json(path, &eval)?;
    }
    Ok(())
}

/// `enf qm9-render`.
#[derive(Args, Debug)]
pub struct RenderArgs {
    /// The XYZ file (one or more frames).
    #[arg(long)]
    pub xyz: PathBuf,
    /// The PNG file to write.
    #[arg(long)]
    pub png: PathBuf,
    /// Number of molecules to draw (the first ones, after --stable-only's filter).
    #[arg(long, default_value_t = 6)]
    pub n: usize,
    /// Draw only molecules that pass the stability check.
    #[arg(long)]
    pub stable_only: bool,
    /// Molecules per row.
    #[arg(long, default_value_t = 3)]
    pub columns: usize,
    /// Pixels per molecule (square cells).
    #[arg(long, default_value_t = 260)]
    pub cell: u32,
}

/// `enf qm9-render`: draws molecules of an XYZ file into a PNG.
pub fn render(args: &RenderArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.xyz)
        .with_context(|| format!("reading {}", args.xyz.display()))?;
    let molecules: Vec<_> = datasets::qm9::parse_xyz(&text)?
        .into_iter()
        .filter(|m| !args.stable_only || m.stability().is_ok_and(|s| s.is_stable()))
        .take(args.n)
        .collect();
    experiments::qm9::render::render_png(&args.png, &molecules, args.columns, args.cell)?;
    println!(
        "drew {} molecules into {}",
        molecules.len(),
        args.png.display()
    );
    Ok(())
}

/// `enf qm9-train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Where the run's files go (re-running resumes).
    #[arg(long)]
    pub run_dir: PathBuf,
    /// The QM9 file (made on first use).
    #[arg(long, default_value = "data/qm9.h5")]
    pub data: PathBuf,
    /// Optimiser steps in all.
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Molecules per batch (the paper: 128 with the adjoint; backpropagation through the
    /// solver, the default, needs about 1 GB per molecule at 30 NFE for the 6 x 64 model, hence
    /// 8; with --adjoint memory stays flat).
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Gradients by the adjoint method, as the paper trained: flat memory (the paper's batch of
    /// 128 fits), about twice the evaluations of a step.
    #[arg(long)]
    pub adjoint: bool,
    /// Train on a seeded subset of this many training molecules (default: all 100,000).
    #[arg(long)]
    pub n_train: Option<usize>,
    /// Learning rate (args.json of the pretrained model: 2e-4).
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// The flow's dynamics: enf (EGNN, the default) or the paper's QM9 baselines gnf_att,
    /// gnf_att_aug (a GNN over [t, x, h]; -aug trains on randomly rotated molecules), or gnf.
    #[arg(long, default_value = "enf")]
    pub method: experiments::config::FlowMethod,
    /// Layers and width of the dynamics' network (the paper: 6 x 64).
    #[arg(long, default_value_t = 6)]
    pub n_layers: i64,
    /// Hidden features of the dynamics.
    #[arg(long, default_value_t = 64)]
    pub hidden_nf: i64,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// libtorch threads (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: i32,
}

/// `enf qm9-train`: trains (or resumes) a QM9 E-NF or GNF baseline, printing every step.
pub fn train(args: &TrainArgs) -> Result<()> {
    use experiments::qm9::run::{train_qm9, Qm9RunConfig};
    if args.threads > 0 {
        tch::set_num_threads(args.threads);
    }
    let ds = ensure_qm9(&args.data, None)
        .with_context(|| format!("QM9 data set {}", args.data.display()))?;
    let mut config = Qm9RunConfig {
        batch_size: args.batch_size,
        n_train: args.n_train,
        steps: args.steps,
        seed: args.seed,
        ..Qm9RunConfig::default()
    };
    config.train.lr = args.lr;
    if args.adjoint {
        config.train.gradients = experiments::config::GradientMethod::Adjoint;
    }
    config.model.method = args.method;
    config.model.egnn.n_layers = args.n_layers;
    config.model.egnn.hidden_nf = args.hidden_nf;
    let start = std::time::Instant::now();
    let (_, last) = train_qm9(&config, &ds, &args.run_dir, |step, r| {
        println!(
            "step {step}: NLL {:.2}, regulariser {:.1}, gradient norm {:.1}{}, {} NFE ({:.0} s)",
            r.nll,
            r.regulariser,
            r.grad_norm,
            if r.clipped { " (clipped)" } else { "" },
            r.nfe,
            start.elapsed().as_secs_f64()
        );
    })?;
    if let Some(r) = last {
        println!(
            "trained to step {} in {}; last batch NLL {:.2}. Evaluate with `enf qm9-evaluate --run-dir {}`",
            args.steps,
            args.run_dir.display(),
            r.nll,
            args.run_dir.display()
        );
    }
    Ok(())
}
