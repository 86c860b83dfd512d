//! Times training steps of a trained DW4 run (NFE grows as a flow learns, so steps of an
//! initialised model understate the cost of a run).
//!
//! `cargo run --release -p enf-experiments --example step_timing -- <run_dir> [steps] [workers]`
//! loads `<run_dir>/config.toml` and `<run_dir>/last.safetensors` and prints seconds and NFE per
//! step for the first training batches, with epoch 1's batches and probes (seeded as training
//! seeds them, so runs are repeatable). The optimiser steps change the model, as in training.

use datasets::ensure_dataset;
use experiments::{
    checkpoint,
    data::TensorBatch,
    train::{optimiser, train_step, training_schedule},
    EnfModel, RunConfig,
};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> anyhow::Result<()> {
    geometry::flush_denormals();
    geometry::tune_allocator();
    let args: Vec<String> = std::env::args().collect();
    let run_dir = PathBuf::from(
        args.get(1)
            .map(String::as_str)
            .unwrap_or("runs/table1/dw4-n1000-seed0"),
    );
    let steps: usize = args.get(2).map_or(Ok(10), |s| s.parse())?;
    let mut config = RunConfig::from_file(&run_dir.join("config.toml"))?;
    if let Some(w) = args.get(3) {
        config.training.workers = w.parse()?;
    }
    tch::set_num_threads(config.training.threads.max(1) as i32);
    let dataset = ensure_dataset(config.data_path(&PathBuf::from("data")), config.data.system)?;
    let mut model = EnfModel::for_run(&config, tch::Device::Cpu)?;
    checkpoint::load(&mut model.vs, &run_dir.join("last.safetensors"))?;
    let t = &config.training;
    let mut opt = optimiser(&model, t);
    let schedule = training_schedule(&config, &dataset)?;
    let (mut seconds, mut nfes) = (Vec::new(), Vec::new());
    // The probes of epoch 1 as training draws them, so that two runs (an A/B of two builds or
    // configurations) see the same batches and probes.
    tch::manual_seed(experiments::train::epoch_seed(t.seed, 1));
    for (i, batch) in schedule.epoch(&dataset, 1)?.cycle().take(steps).enumerate() {
        let batch = TensorBatch::from_batch(&batch, tch::Kind::Float, tch::Device::Cpu);
        let start = Instant::now();
        let (nll, nfe) = train_step(
            &model,
            &mut opt,
            &mut Default::default(),
            &batch,
            &config,
            1,
            i,
        )?;
        seconds.push(start.elapsed().as_secs_f64());
        nfes.push(nfe);
        println!("step {i}: NLL {nll:.3}, {nfe:.1} NFE, {:.3} s", seconds[i]);
    }
    let total: f64 = seconds.iter().sum();
    let nfe: f64 = nfes.iter().sum();
    println!(
        "{} workers: {:.3} s per step, {:.1} NFE per step, {:.2} ms per NFE",
        t.workers,
        total / steps as f64,
        nfe / steps as f64,
        1e3 * total / nfe
    );
    Ok(())
}
