//! `enf`: train, evaluate and reproduce the E(n) Equivariant Normalizing Flows paper's tables.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use datasets::{ensure_dataset, ParticleDataset, System};
use experiments::table1::{self, Profile, Table1Options};
use experiments::{train::train, RunConfig};
use std::path::PathBuf;
use std::time::Instant;

mod cli {
    pub mod qm9;
}

#[derive(Parser)]
#[command(
    name = "enf",
    version,
    about = "E(n) Equivariant Normalizing Flows in Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reproduce the paper's Table 1 and print it beside the paper's numbers. Without flags: the
    /// default profile, all six methods on DW4 and LJ13 at 1,000 training samples, one seed,
    /// fewer epochs than the paper (about half an hour on 2 cores); `--full` runs the paper's
    /// protocol. Finished runs are reused, interrupted ones resumed.
    ReproduceTable1 {
        /// Run the paper's protocol exactly: every training-set size, its epochs, three seeds.
        #[arg(long)]
        full: bool,
        /// Methods: gnf, gnf_att, gnf_att_aug, simple_dynamics, kernel_dynamics, enf (default all).
        #[arg(long = "method", value_delimiter = ',')]
        methods: Vec<experiments::config::FlowMethod>,
        /// Systems: dw4, lj13 (default both; LJ13 data take about 2 minutes to generate on first
        /// use).
        #[arg(long = "system", value_delimiter = ',')]
        systems: Vec<System>,
        /// Training-set sizes (default: the profile's).
        #[arg(long = "n-train", value_delimiter = ',')]
        n_train: Option<Vec<usize>>,
        /// Seeds (default: 0, or 0,1,2 with --full).
        #[arg(long = "seeds", value_delimiter = ',')]
        seeds: Option<Vec<u64>>,
        /// Train for this many epochs instead of the profile's.
        #[arg(long)]
        epochs: Option<usize>,
        /// Run only share i of n (0-based, e.g. 3/8) of the planned runs, for cluster job
        /// arrays; every shard writes into the same --runs-dir, and `--merge` assembles the table.
        #[arg(long)]
        shard: Option<table1::Shard>,
        /// Train nothing: assemble the table from the result files under --runs-dir.
        #[arg(long)]
        merge: bool,
        /// Directory of run outputs (the table goes to <runs-dir>/table1-<profile>.md and .json).
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        /// Directory of data sets (generated on first use).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Do not draw progress bars.
        #[arg(long)]
        no_progress: bool,
    },
    /// Train one run from a TOML configuration.
    Train {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Where the run's files go.
        #[arg(long)]
        run_dir: PathBuf,
        /// Directory of data sets (used when the config names no path).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// Generate a particle-system data set by Metropolis sampling (skipped if a valid file drawn
    /// with the same settings exists; one drawn with other settings is refused, not overwritten).
    GenerateData {
        /// The system (dw4, lj13).
        #[arg(long, default_value = "dw4")]
        system: System,
        /// Output HDF5 file (default data/<system>.h5).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Import samples from a .npy array (as in the literature's data folders) into HDF5.
    ImportNpy {
        /// The system the samples belong to.
        #[arg(long)]
        system: System,
        /// The .npy file, [N, M * n] or [N, M, n].
        #[arg(long)]
        input: PathBuf,
        /// Output HDF5 file.
        #[arg(long)]
        output: PathBuf,
    },
    /// Evaluate a trained run's checkpoint on a split and print the NLL and solver statistics.
    Evaluate {
        /// The run directory (holds config.toml and the checkpoints).
        #[arg(long)]
        run_dir: PathBuf,
        /// Which checkpoint: best or last.
        #[arg(long, default_value = "best")]
        checkpoint: String,
        /// Which split: train, val or test.
        #[arg(long, default_value = "test")]
        split: String,
        /// Trace estimator: exact, rademacher or gaussian (Hutchinson).
        #[arg(long, default_value = "exact")]
        trace: String,
        /// Override the solver's rtol and atol.
        #[arg(long)]
        tol: Option<f64>,
        /// Override the solver's error norm (rms or mixed_rms).
        #[arg(long)]
        norm: Option<String>,
        /// Evaluate only the first n samples of the split.
        #[arg(long)]
        limit: Option<usize>,
        /// Directory of data sets (used when the config names no path).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// Reproduce the paper's Table 2 (QM9): the E-NF from the authors' pretrained checkpoint,
    /// the GNF-attention baselines trained here, and the data: NLL of test molecules, stability
    /// of samples. Without flags: the E-NF on 1,000 test molecules (Hutchinson), 4 with the exact
    /// trace, 1,000 samples, and the baselines trained briefly (3 x 32, 2,048 molecules, 3
    /// epochs; about 25 minutes on 2 cores in all); `--full`: the whole test split, 100 exact,
    /// 10,000 samples, and the reference's protocol for the baselines (100 epochs of 100,000
    /// molecules).
    ReproduceTable2 {
        /// The paper's sizes.
        #[arg(long)]
        full: bool,
        /// Folder of the pretrained checkpoint (flow.safetensors, dequantizer.safetensors, args.json).
        #[arg(long, default_value = "../shared/data/pretrained-qm9")]
        pretrained: PathBuf,
        /// The QM9 file (made on first use).
        #[arg(long, default_value = "data/qm9.h5")]
        data: PathBuf,
        /// Where table2-<profile>.md/.json and the sampled molecules (XYZ) go.
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        /// Test molecules for the Hutchinson NLL (default: the profile's).
        #[arg(long)]
        n_nll: Option<usize>,
        /// Test molecules for the exact-trace NLL (default: the profile's).
        #[arg(long)]
        n_exact: Option<usize>,
        /// Molecules to sample (default: the profile's).
        #[arg(long)]
        n_samples: Option<usize>,
        /// Seed of subsets, noise, samples and the baselines' training.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The GNF baselines to train and evaluate (comma-separated: gnf_att, gnf_att_aug; the
        /// default: both).
        #[arg(long, value_delimiter = ',', conflicts_with = "no_baselines")]
        baselines: Option<Vec<experiments::config::FlowMethod>>,
        /// Evaluate the pretrained E-NF and the data only.
        #[arg(long)]
        no_baselines: bool,
        /// Do not draw progress bars.
        #[arg(long)]
        no_progress: bool,
    },
    /// Reproduce the paper's Table 3 (QM9 positional: the 19-atom molecules, positions only):
    /// train every method, report its test NLL and the Jensen-Shannon divergence of interatomic
    /// distances of 1,000 samples beside the paper's. Without flags: the default profile (3 x 32
    /// networks instead of 6 x 64, the first 2,048 training molecules, batch 32, 3 epochs,
    /// validation and test on 500 molecules each, one seed; about 30 minutes on 2 cores);
    /// `--full`: the reference's protocol (6 x 64, all 13,832 training molecules, batch 128,
    /// 1,000 epochs, whole splits). Finished runs are reused, interrupted ones resumed.
    ReproduceTable3 {
        /// The full protocol (the reference script's settings).
        #[arg(long)]
        full: bool,
        /// Methods: gnf, gnf_att, gnf_att_aug, simple_dynamics, kernel_dynamics, enf (default all).
        #[arg(long = "method", value_delimiter = ',')]
        methods: Vec<experiments::config::FlowMethod>,
        /// Seeds (default 0).
        #[arg(long = "seeds", value_delimiter = ',')]
        seeds: Option<Vec<u64>>,
        /// Training molecules instead of the profile's (at most 13,832).
        #[arg(long = "n-train")]
        n_train: Option<usize>,
        /// Epochs instead of the profile's.
        #[arg(long)]
        epochs: Option<usize>,
        /// Molecules sampled per run for the JS divergence.
        #[arg(long, default_value_t = experiments::table3::JS_SAMPLES)]
        n_samples: usize,
        /// Train nothing: assemble the table from the files under --runs-dir.
        #[arg(long)]
        merge: bool,
        /// Directory of run outputs (the table goes to <runs-dir>/table3-<profile>.md and .json).
        #[arg(long, default_value = "runs")]
        runs_dir: PathBuf,
        /// Directory of data sets (qm9.h5 and qm9_positional.h5, made on first use).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Do not draw progress bars.
        #[arg(long)]
        no_progress: bool,
    },
    /// Make (or check) the QM9 data set and print its figures (molecules, split, elements,
    /// stability of the data).
    Qm9Data {
        /// The QM9 file.
        #[arg(long, default_value = "data/qm9.h5")]
        data: PathBuf,
    },
    /// NLL of QM9 molecules under a QM9 E-NF (the authors' pretrained checkpoint).
    Qm9Evaluate(cli::qm9::EvaluateArgs),
    /// Sample molecules from a QM9 E-NF, report their stability, write them as XYZ.
    Qm9Sample(cli::qm9::SampleArgs),
    /// Draw molecules of an XYZ file into a PNG (ball and stick).
    Qm9Render(cli::qm9::RenderArgs),
    /// Train a QM9 E-NF (resumable; NLL + 1e-3 ODE regulariser, adaptive clipping, AdamW).
    Qm9Train(cli::qm9::TrainArgs),
    /// Print the default configuration of one Table 1 cell as TOML.
    PrintConfig {
        /// The system.
        #[arg(long, default_value = "dw4")]
        system: System,
        /// Training samples.
        #[arg(long, default_value_t = 1000)]
        n_train: usize,
    },
}

fn main() -> Result<()> {
    // Before any libtorch call, so that libtorch's threads inherit it (FACTS.md 6).
    geometry::flush_denormals();
    // Freed tensor memory is reused instead of faulted in again (30% of a training step).
    geometry::tune_allocator();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::ReproduceTable1 {
            full,
            methods,
            systems,
            n_train,
            seeds,
            epochs,
            shard,
            merge,
            runs_dir,
            data_dir,
            no_progress,
        } => {
            let start = Instant::now();
            let mut options = Table1Options::new(if full {
                Profile::Full
            } else {
                Profile::Default
            });
            if !methods.is_empty() {
                options.methods = methods;
            }
            if !systems.is_empty() {
                options.systems = systems;
            }
            options.n_train = n_train;
            options.seeds = seeds;
            options.epochs = epochs;
            options.shard = shard;
            options.runs_dir = runs_dir;
            options.data_dir = data_dir;
            options.progress = !no_progress;
            let table = if merge {
                table1::merge(&options)?
            } else {
                table1::reproduce(&options)?
            };
            let out = table.write(&options.runs_dir)?;
            println!("{}", table.markdown());
            println!(
                "This invocation: {:.0} s{}.",
                start.elapsed().as_secs_f64(),
                shard.map_or(String::new(), |s| format!(
                    " (shard {}/{})",
                    s.index, s.count
                ))
            );
            tracing::info!("table written to {} (and .json)", out.display());
        }
        Command::Train {
            config,
            run_dir,
            data_dir,
        } => {
            let cfg = RunConfig::from_file(&config)?;
            let path = cfg.data_path(&data_dir);
            let dataset = cfg
                .load_dataset(&data_dir)
                .with_context(|| format!("data set {}", path.display()))?;
            let result = train(&cfg, &dataset, &run_dir, true)?;
            println!("{}", result.summary());
        }
        Command::GenerateData { system, output } => {
            let path = output.unwrap_or_else(|| {
                PathBuf::from("data").join(format!("{}.h5", system.name().to_lowercase()))
            });
            let start = Instant::now();
            let ds = ensure_dataset(&path, system)?;
            println!(
                "{}: {} samples of {} ({:.1} s)",
                path.display(),
                ds.len(),
                system.name(),
                start.elapsed().as_secs_f64()
            );
        }
        Command::ImportNpy {
            system,
            input,
            output,
        } => {
            let ds = ParticleDataset::import_npy(&input, system)?;
            ds.write(&output)?;
            println!(
                "{}: {} samples imported from {}",
                output.display(),
                ds.len(),
                input.display()
            );
        }
        Command::Evaluate {
            run_dir,
            checkpoint,
            split,
            trace,
            tol,
            norm,
            limit,
            data_dir,
        } => {
            evaluate_run(
                &run_dir,
                &checkpoint,
                &split,
                &trace,
                tol,
                norm.as_deref(),
                limit,
                &data_dir,
            )?;
        }
        Command::ReproduceTable2 {
            full,
            pretrained,
            data,
            runs_dir,
            n_nll,
            n_exact,
            n_samples,
            seed,
            baselines,
            no_baselines,
            no_progress,
        } => {
            use experiments::qm9::{reproduce_table2, Table2Options, Table2Profile};
            let profile = if full {
                Table2Profile::Full
            } else {
                Table2Profile::Default
            };
            let mut options = Table2Options::new(profile, pretrained);
            options.data = data;
            options.out_dir = runs_dir;
            if n_nll.is_some() {
                options.n_nll = n_nll;
            }
            if let Some(n) = n_exact {
                options.n_exact = n;
            }
            if let Some(n) = n_samples {
                options.n_samples = n;
            }
            options.seed = seed;
            if no_baselines {
                options.baselines.clear();
            } else if let Some(b) = baselines {
                options.baselines = b;
            }
            options.progress = !no_progress;
            let table = reproduce_table2(&options)?;
            let out = table.write(&options.out_dir)?;
            println!("{}", table.markdown());
            tracing::info!("table written to {} (and .json)", out.display());
        }
        Command::ReproduceTable3 {
            full,
            methods,
            seeds,
            n_train,
            epochs,
            n_samples,
            merge,
            runs_dir,
            data_dir,
            no_progress,
        } => {
            use experiments::table3::{self, Table3Options};
            let start = Instant::now();
            let mut options = Table3Options::new(if full {
                Profile::Full
            } else {
                Profile::Default
            });
            if !methods.is_empty() {
                options.methods = methods;
            }
            if let Some(seeds) = seeds {
                options.seeds = seeds;
            }
            if let Some(n) = n_train {
                options.protocol.n_train = n;
            }
            if let Some(e) = epochs {
                options.protocol.epochs = e;
            }
            options.n_samples = n_samples;
            options.runs_dir = runs_dir;
            options.data_dir = data_dir;
            options.progress = !no_progress;
            let table = if merge {
                table3::merge(&options)?
            } else {
                table3::reproduce(&options)?
            };
            let out = table.write(&options.runs_dir)?;
            println!("{}", table.markdown());
            println!("This invocation: {:.0} s.", start.elapsed().as_secs_f64());
            tracing::info!("table written to {} (and .json)", out.display());
        }
        Command::Qm9Data { data } => cli::qm9::data(&data)?,
        Command::Qm9Evaluate(args) => cli::qm9::evaluate(&args)?,
        Command::Qm9Sample(args) => cli::qm9::sample(&args)?,
        Command::Qm9Render(args) => cli::qm9::render(&args)?,
        Command::Qm9Train(args) => cli::qm9::train(&args)?,
        Command::PrintConfig { system, n_train } => {
            print!("{}", RunConfig::paper_cell(system, n_train, 0)?.to_toml());
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn evaluate_run(
    run_dir: &std::path::Path,
    checkpoint: &str,
    split: &str,
    trace: &str,
    tol: Option<f64>,
    norm: Option<&str>,
    limit: Option<usize>,
    data_dir: &std::path::Path,
) -> Result<()> {
    use experiments::{checkpoint, evaluate::evaluate_nll, EnfModel};
    use flow::{Noise, TraceEstimator};
    let mut cfg = RunConfig::from_file(&run_dir.join(experiments::train::files::CONFIG))?;
    if let Some(tol) = tol {
        cfg.solver.options.rtol = tol;
        cfg.solver.options.atol = tol;
    }
    if let Some(norm) = norm {
        cfg.solver.options.norm = match norm {
            "rms" => ode::ErrorNorm::Rms,
            "mixed_rms" => ode::ErrorNorm::MixedRms,
            other => anyhow::bail!("--norm {other}: expected rms or mixed_rms"),
        };
    }
    let trace = match trace {
        "exact" => TraceEstimator::Exact,
        "rademacher" => TraceEstimator::Hutchinson(Noise::Rademacher),
        "gaussian" => TraceEstimator::Hutchinson(Noise::Gaussian),
        other => anyhow::bail!("--trace {other}: expected exact, rademacher or gaussian"),
    };
    let split = match split {
        "train" => datasets::SplitName::Train,
        "val" => datasets::SplitName::Val,
        "test" => datasets::SplitName::Test,
        other => anyhow::bail!("--split {other}: expected train, val or test"),
    };
    let file = match checkpoint {
        "best" => experiments::train::files::BEST,
        "last" => experiments::train::files::LAST,
        other => anyhow::bail!("--checkpoint {other}: expected best or last"),
    };
    if cfg.training.threads > 0 {
        tch::set_num_threads(cfg.training.threads as i32);
    }
    let dataset = cfg.load_dataset(data_dir)?;
    let device = cfg.training.device.device()?;
    let mut model = EnfModel::for_run(&cfg, device)?;
    let meta = checkpoint::load(&mut model.vs, &run_dir.join(file))?;
    // The run's own evaluation subset (a reduced protocol's data.n_val / data.n_test) unless
    // --limit says otherwise, so that the default repeats result.json.
    let run_subset = match split {
        datasets::SplitName::Val => cfg.data.n_val,
        datasets::SplitName::Test => cfg.data.n_test,
        datasets::SplitName::Train => None,
    };
    let available = dataset.splits.get(split).len();
    let first = limit.or(run_subset).map(|n| n.min(available));
    let batch = experiments::train::evaluation_batch(&dataset, split, first, device)?;
    // The seed of the run's own test evaluation, so a Hutchinson test NLL repeats result.json.
    tch::manual_seed(experiments::train::test_seed(&cfg.training));
    let eval = evaluate_nll(&model, &batch, &cfg.training, trace, split.as_str())?;
    println!(
        "{} (epoch {}), {} split, {} samples: NLL {:.4} +- {:.4} nats; {} NFE, {} accepted and {} rejected steps; {:.1} s",
        file,
        meta.get("epoch").map_or("?", String::as_str),
        split.as_str(),
        eval.n_samples,
        eval.nll,
        eval.nll_std_err,
        eval.nfe,
        eval.accepted_steps,
        eval.rejected_steps,
        eval.seconds
    );
    Ok(())
}
