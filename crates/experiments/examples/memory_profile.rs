//! Resident memory across training steps, to show that nothing accumulates from step to step.
//!
//! `cargo run --release -p enf-experiments --example memory_profile -- [backprop|adjoint] [steps]`
//! trains the paper's DW4 E-NF (1,000 training samples, batch 100, one worker) from its seeded
//! initialisation for `steps` steps (200 by default) and prints, every 20 steps, the resident set
//! size (VmRSS) and its peak so far (VmHWM) from /proc/self/status, with the step's NFE. Run one
//! gradient method per process: the peak is per process.

use datasets::{ensure_dataset, System};
use experiments::config::GradientMethod;
use experiments::{
    data::TensorBatch,
    train::{optimiser, train_step, training_schedule},
    EnfModel, RunConfig,
};
use std::path::PathBuf;

/// `(VmRSS, VmHWM)` in MiB.
fn memory_mib() -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow::anyhow!("no {name} in /proc/self/status"))?;
        let kib: f64 = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("malformed {line}"))?
            .parse()?;
        Ok(kib / 1024.0)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn main() -> anyhow::Result<()> {
    geometry::flush_denormals();
    geometry::tune_allocator();
    tch::set_num_threads(1);
    let args: Vec<String> = std::env::args().collect();
    let method = match args.get(1).map(String::as_str) {
        None | Some("backprop") => GradientMethod::Backprop,
        Some("adjoint") => GradientMethod::Adjoint,
        Some(other) => anyhow::bail!("unknown gradient method {other}: backprop or adjoint"),
    };
    let steps: usize = args.get(2).map_or(Ok(200), |s| s.parse())?;
    let mut config = RunConfig::paper_cell(System::Dw4, 1000, 0)?;
    config.training.gradients = method;
    config.training.workers = 1;
    let dataset = ensure_dataset(config.data_path(&PathBuf::from("data")), System::Dw4)?;
    tch::manual_seed(0);
    let model = EnfModel::for_run(&config, tch::Device::Cpu)?;
    let t = &config.training;
    let mut opt = optimiser(&model, t);
    let schedule = training_schedule(&config, &dataset)?;
    let per_epoch = config.data.n_train.div_ceil(t.batch_size);
    let mut step = 0;
    'epochs: for epoch in 0u64.. {
        for batch in schedule.epoch(&dataset, epoch)? {
            let batch = TensorBatch::from_batch(&batch, tch::Kind::Float, tch::Device::Cpu);
            let (nll, nfe) = train_step(
                &model,
                &mut opt,
                &mut Default::default(),
                &batch,
                &config,
                epoch as usize,
                step % per_epoch,
            )?;
            step += 1;
            if step % 20 == 0 {
                let (rss, hwm) = memory_mib()?;
                println!(
                    "{method:?} step {step}: NLL {nll:.3}, {nfe:.0} NFE, RSS {rss:.1} MiB, peak {hwm:.1} MiB"
                );
            }
            if step == steps {
                break 'epochs;
            }
        }
    }
    Ok(())
}
