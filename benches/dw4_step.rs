//! criterion benchmarks of the E-NF core on DW4 (batch 100, dopri5 at rtol = atol = 1e-4):
//! one training step (Hutchinson trace, backpropagation through the solver, AdamW) and one forward
//! solve without gradients, whose trace is computed both ways: `jvp` from the dynamics'
//! forward-mode derivative (`J eps`, `J e_k`; the default), `vjp` from autograd's vector-Jacobian
//! products (the reference's way, `Cnf::forward_mode_trace = false`). Training steps run with one
//! and two workers in the default mode (no suffix) and with one worker by the vector-Jacobian
//! product (suffix `_vjp`). The NFE of each are printed once before timing.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use enf_benches::{dw4_batch, dw4_dataset, dw4_model, optimiser_with_reset, train_step};
use flow::{GradientMode, Noise, TraceEstimator};

fn dw4(c: &mut Criterion) {
    let dataset = dw4_dataset();
    let batch = dw4_batch(&dataset, 100);
    let hutchinson = TraceEstimator::Hutchinson(Noise::Rademacher);
    let mut group = c.benchmark_group("dw4");
    group.sample_size(20);
    for (mode, forward_mode_trace) in [("jvp", true), ("vjp", false)] {
        let (config, mut model) = dw4_model();
        model.flow.forward_mode_trace = forward_mode_trace;
        let (mut opt, restore) = optimiser_with_reset(&model);
        let workers: &[usize] = if forward_mode_trace { &[1, 2] } else { &[1] };
        let suffix = if forward_mode_trace { "" } else { "_vjp" };
        for &workers in workers {
            let mut config = config.clone();
            config.training.workers = workers;
            let mut step = || {
                restore();
                train_step(&model, &mut opt, &batch, &config)
            };
            let (_, nfe) = step();
            eprintln!(
                "DW4 training step ({mode} trace), {workers} worker(s): {nfe} NFE per shard's solve"
            );
            group.bench_function(
                format!("training_step_batch100_hutchinson_{workers}_workers{suffix}"),
                |b| b.iter(&mut step),
            );
        }
        restore();
        let solve = |trace: TraceEstimator| {
            model
                .flow
                .log_likelihood(&batch.positions, &batch.masks, trace, GradientMode::NoGrad)
                .unwrap()
        };
        let traces = [
            (format!("hutchinson_{mode}"), hutchinson),
            (format!("exact_{mode}"), TraceEstimator::Exact),
        ];
        for (name, trace) in traces {
            let nfe = solve(trace).1.nfe;
            eprintln!("DW4 forward solve ({name} trace, no gradients): {nfe} NFE");
            group.bench_function(format!("forward_solve_batch100_{name}"), |b| {
                b.iter(|| solve(trace))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, dw4);
criterion_main!(benches);
