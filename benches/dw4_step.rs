//! criterion benchmarks of the E-NF core on DW4 (batch 100, dopri5 at rtol = atol = 1e-4):
//! one training step (Hutchinson trace, backpropagation through the solver, AdamW) and one forward
//! solve without gradients. The NFE of each are printed once before timing.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use enf_benches::{dw4_batch, dw4_dataset, dw4_model, optimiser_with_reset};
use flow::{GradientMode, Noise, TraceEstimator};

fn dw4(c: &mut Criterion) {
    let dataset = dw4_dataset();
    let batch = dw4_batch(&dataset, 100);
    let (config, model) = dw4_model();
    let (mut opt, restore) = optimiser_with_reset(&model);
    let hutchinson = TraceEstimator::Hutchinson(Noise::Rademacher);
    let mut group = c.benchmark_group("dw4");
    group.sample_size(20);
    for workers in [1, 2] {
        let mut config = config.clone();
        config.training.workers = workers;
        let (_, nfe) = experiments::train::train_step(
            &model,
            &mut opt,
            &mut Default::default(),
            &batch,
            &config,
            0,
            0,
        )
        .unwrap();
        eprintln!("DW4 training step, {workers} worker(s): {nfe} NFE per shard's forward solve");
        group.bench_function(
            format!("training_step_batch100_hutchinson_{workers}_workers"),
            |b| {
                b.iter(|| {
                    restore();
                    experiments::train::train_step(
                        &model,
                        &mut opt,
                        &mut Default::default(),
                        &batch,
                        &config,
                        0,
                        0,
                    )
                    .unwrap()
                })
            },
        );
    }
    restore();
    let solve = |trace: TraceEstimator| {
        model
            .flow
            .log_likelihood(&batch.positions, &batch.masks, trace, GradientMode::NoGrad)
            .unwrap()
    };
    for (name, trace) in [("hutchinson", hutchinson), ("exact", TraceEstimator::Exact)] {
        eprintln!(
            "DW4 forward solve ({name} trace, no gradients): {} NFE",
            solve(trace).1.nfe
        );
        group.bench_function(format!("forward_solve_batch100_{name}"), |b| {
            b.iter(|| solve(trace))
        });
    }
    group.finish();
}

criterion_group!(benches, dw4);
criterion_main!(benches);
