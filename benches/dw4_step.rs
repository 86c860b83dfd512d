//! criterion benchmarks of the E-NF core on DW4 (batch 100, dopri5 at rtol = atol = 1e-4):
//! one training step (Hutchinson trace, backpropagation through the solver, AdamW) and one forward
//! solve without gradients. The NFE of each are printed once before timing.

use criterion::{criterion_group, criterion_main, Criterion};
use enf_benches::{dw4_batch, dw4_dataset, dw4_model};
use flow::{GradientMode, Noise, TraceEstimator};
use tch::nn::OptimizerConfig;

fn dw4(c: &mut Criterion) {
    let dataset = dw4_dataset();
    let batch = dw4_batch(&dataset, 100);
    let (config, model) = dw4_model();
    let mut opt = tch::nn::AdamW {
        wd: 1e-12,
        amsgrad: true,
        ..Default::default()
    }
    .build(&model.vs, 5e-4)
    .unwrap();
    let hutchinson = TraceEstimator::Hutchinson(Noise::Rademacher);

    // Every timed step starts from the same parameters, so the NFE does not drift as the
    // optimiser changes the model.
    let initial: Vec<tch::Tensor> = model
        .vs
        .trainable_variables()
        .iter()
        .map(|t| t.copy())
        .collect();
    let restore = || {
        tch::no_grad(|| {
            for (mut p, v) in model.vs.trainable_variables().into_iter().zip(&initial) {
                p.copy_(v);
            }
        })
    };
    let mut group = c.benchmark_group("dw4");
    group.sample_size(20);
    for workers in [1, 2] {
        let mut config = config.clone();
        config.training.workers = workers;
        let (_, nfe) =
            experiments::train::train_step(&model, &mut opt, &batch, &config, 0, 0).unwrap();
        eprintln!("DW4 training step, {workers} worker(s): {nfe} NFE per shard's forward solve");
        group.bench_function(
            format!("training_step_batch100_hutchinson_{workers}_workers"),
            |b| {
                b.iter(|| {
                    restore();
                    experiments::train::train_step(&model, &mut opt, &batch, &config, 0, 0).unwrap()
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
