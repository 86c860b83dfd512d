//! criterion benchmarks of the ODE core, the same solves as `benches/torchdiffeq/compare.py` runs
//! with torchdiffeq 0.2.5 (results side by side in docs/results/ode-benchmarks.md):
//!
//! - solver overhead: dopri5 at rtol = atol = 1e-6 on y' = -y over [0, 1] with a state of 1,000
//!   and 100,000 f32 entries (the right-hand side is one op, so the time is the solver's);
//! - an E-NF forward solve (log-likelihood with the Hutchinson trace, no parameter gradients) on
//!   batches of 100 DW4 and LJ13 reference samples, dopri5 at 1e-4;
//! - an E-NF training step (the same solve, gradients, AdamW) with backpropagation through the
//!   solver and with the adjoint method.
//!
//! The E-NF cases run twice: with Hutchinson's estimate by forward mode (`J eps`, the default) and
//! with suffix `_vjp` by autograd's vector-Jacobian product (`eps^T J`, as torchdiffeq's script).
//!
//! Everything on one thread (`training.workers = 1`, one libtorch thread), except the training
//! steps with suffix `_2_workers` (the batch split between two workers, one thread each, as
//! training runs by default; compare with `compare.py --threads 2`); from the models' seeded
//! initialisation; parameters are reset before every timed step. NFE are printed once per case.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use datasets::System;
use enf_benches::{optimiser_with_reset, paper_model, reference_batch, train_step};
use experiments::config::GradientMethod;
use flow::{GradientMode, Noise, TraceEstimator};
use ode::{OdeError, OdeSolver};
use std::time::Duration;
use tch::{Kind, Tensor};

fn overhead(c: &mut Criterion) {
    geometry::flush_denormals();
    geometry::tune_allocator();
    tch::set_num_threads(1);
    let mut group = c.benchmark_group("ode_overhead");
    let decay = |_t: f64, y: &[Tensor]| -> Result<Vec<Tensor>, OdeError> { Ok(vec![-&y[0]]) };
    let solver = OdeSolver::dopri5(1e-6, 1e-6);
    for n in [1_000i64, 100_000] {
        let y0 = Tensor::ones([n], (Kind::Float, tch::Device::Cpu));
        let solve = || tch::no_grad(|| solver.solve(&decay, 0.0, 1.0, &[y0.shallow_clone()]));
        eprintln!("dopri5 on y' = -y, {n} floats: {:?}", solve().unwrap().1);
        group.bench_function(format!("dopri5_decay_{n}_floats"), |b| b.iter(solve));
    }
    group.finish();
}

fn enf(c: &mut Criterion) {
    let mut group = c.benchmark_group("enf");
    // One iteration per sample: an LJ13 step with the adjoint takes seconds.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(1));
    for (system, file) in [
        (System::Dw4, "train_split_DW4.npy"),
        (System::Lj13, "val_split_LJ13-1000.npy"),
    ] {
        let name = system.name().to_lowercase();
        let batch = reference_batch(system, file, 100);
        // Hutchinson's estimate by forward mode (the default) and, as the reference computes it,
        // by autograd's vector-Jacobian product.
        for (mode, forward_mode_trace) in [("", true), ("_vjp", false)] {
            let (mut config, mut model) = paper_model(system);
            model.flow.forward_mode_trace = forward_mode_trace;
            let (mut opt, reset) = optimiser_with_reset(&model);

            let hutchinson = TraceEstimator::Hutchinson(Noise::Rademacher);
            let forward = || {
                tch::manual_seed(1);
                model
                    .flow
                    .log_likelihood(
                        &batch.positions,
                        &batch.masks,
                        hutchinson,
                        GradientMode::NoGrad,
                    )
                    .unwrap()
            };
            eprintln!("{name} forward solve{mode}: {:?}", forward().1);
            group.bench_function(format!("{name}_forward_solve_batch100{mode}"), |b| {
                b.iter(forward)
            });

            // Training steps on one core and, with the default trace, on both: the batch split
            // between two workers (`training.workers = 2`, as training runs by default).
            let workers: &[usize] = if forward_mode_trace { &[1, 2] } else { &[1] };
            for &n_workers in workers {
                for method in [GradientMethod::Backprop, GradientMethod::Adjoint] {
                    config.training.gradients = method;
                    config.training.workers = n_workers;
                    let mut step = || {
                        reset();
                        tch::manual_seed(1);
                        train_step(&model, &mut opt, &batch, &config)
                    };
                    let suffix = if n_workers == 1 {
                        String::new()
                    } else {
                        format!("_{n_workers}_workers")
                    };
                    eprintln!(
                        "{name} training step ({method:?}{mode}{suffix}): {:.0} NFE per worker's solve",
                        step().1
                    );
                    let id = format!("{name}_training_step_batch100_{method:?}{mode}{suffix}");
                    group.bench_function(id, |b| b.iter(&mut step));
                }
            }
            reset();
        }
    }
    group.finish();
}

criterion_group!(benches, overhead, enf);
criterion_main!(benches);
