//! The adjoint method against backpropagation through the steps, in f64.

use ode::{adjoint_gradients, AdjointOptions, OdeError, OdeSolver};
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

/// y' = A y + b (two components: a vector and a scalar driven by it): the state is
/// `[u [3], s [1]]` with `u' = A u`, `s' = b . u`, parameters `A [3, 3]` and `b [3]`.
struct Linear {
    a: Tensor,
    b: Tensor,
}

impl Linear {
    fn new() -> Self {
        let a = Tensor::from_slice(&[-0.5f64, 1.0, 0.2, -1.0, -0.3, 0.4, 0.1, -0.6, -0.2])
            .view([3, 3])
            .set_requires_grad(true);
        let b = Tensor::from_slice(&[0.3f64, -0.7, 0.5]).set_requires_grad(true);
        Linear { a, b }
    }

    fn rhs(&self) -> impl Fn(f64, &[Tensor]) -> Result<Vec<Tensor>, OdeError> + '_ {
        move |_t, y| {
            let du = self.a.matmul(&y[0]);
            let ds = (&self.b * &y[0]).sum(Kind::Double).reshape([1]);
            Ok(vec![du, ds])
        }
    }
}

fn y0() -> Vec<Tensor> {
    vec![
        Tensor::from_slice(&[1.0f64, -0.5, 2.0]),
        Tensor::from_slice(&[0.25f64]),
    ]
}

/// Loss weights: L = w_u . u(t_1) + 2 s(t_1) + ||u(t_2)||^2 + 3 s(t_2), so both components and
/// both output times carry cotangents.
fn loss(ys: &[Vec<Tensor>]) -> Tensor {
    let w = Tensor::from_slice(&[1.0f64, 2.0, -1.0]);
    (&ys[1][0] * w).sum(Kind::Double)
        + &ys[1][1].sum(Kind::Double) * 2.0
        + ys[2][0].square().sum(Kind::Double)
        + &ys[2][1].sum(Kind::Double) * 3.0
}

fn max_rel(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    (a - b).abs().max().double_value(&[]) / scale
}

#[test]
fn adjoint_equals_backprop_for_parameters_and_initial_state_through_several_output_times() {
    let model = Linear::new();
    let rhs = model.rhs();
    let t_eval = [0.0, 0.6, 1.5];
    let solver = OdeSolver::dopri5(1e-11, 1e-11);

    // Reference: backpropagation through the solver steps.
    let y0_leaf: Vec<Tensor> = y0().iter().map(|t| t.set_requires_grad(true)).collect();
    let sol = solver.solve_at(&rhs, &t_eval, &y0_leaf).unwrap();
    let inputs = [&y0_leaf[0], &y0_leaf[1], &model.a, &model.b];
    let reference = Tensor::run_backward(&[loss(&sol.y)], &inputs, false, false);

    // Adjoint: forward without a graph, cotangents of the loss at each output, backward solve.
    let sol = tch::no_grad(|| solver.solve_at(&rhs, &t_eval, &y0())).unwrap();
    let outs: Vec<Vec<Tensor>> = sol
        .y
        .iter()
        .map(|y| {
            y.iter()
                .map(|t| t.detach().set_requires_grad(true))
                .collect()
        })
        .collect();
    let flat: Vec<&Tensor> = outs.iter().flatten().collect();
    let mut cot = Tensor::run_backward(&[loss(&outs)], &flat, false, true).into_iter();
    let grad_ys: Vec<Vec<Tensor>> = outs
        .iter()
        .map(|y| {
            y.iter()
                .map(|t| {
                    let g = cot.next().unwrap();
                    if g.defined() {
                        g.detach()
                    } else {
                        t.zeros_like()
                    }
                })
                .collect()
        })
        .collect();
    let options = AdjointOptions {
        solver: solver.clone(),
        seminorm: false,
    };
    let params = [model.a.shallow_clone(), model.b.shallow_clone()];
    let adj = adjoint_gradients(&options, &rhs, &params, &t_eval, &sol.y, &grad_ys).unwrap();
    let got = [
        &adj.y0[0],
        &adj.y0[1],
        adj.params[0].as_ref().unwrap(),
        adj.params[1].as_ref().unwrap(),
    ];
    for (name, (g, r)) in ["u0", "s0", "A", "b"]
        .iter()
        .zip(got.iter().zip(&reference))
    {
        let err = max_rel(g, r);
        assert!(err < 1e-8, "{name}: relative error {err}");
    }
    assert!(adj.stats.nfe > 0 && adj.stats.accepted > 0);

    // The seminorm leaves the parameter gradients out of the error control: same gradients
    // within the tolerance, no more steps.
    let semi = AdjointOptions {
        seminorm: true,
        ..options
    };
    let adj_semi = adjoint_gradients(&semi, &rhs, &params, &t_eval, &sol.y, &grad_ys).unwrap();
    let err = max_rel(adj_semi.params[0].as_ref().unwrap(), &reference[2]);
    assert!(err < 1e-7, "seminorm: relative error {err}");
    assert!(
        adj_semi.stats.nfe <= adj.stats.nfe,
        "seminorm {} NFE, full norm {}",
        adj_semi.stats.nfe,
        adj.stats.nfe
    );
}

#[test]
fn frozen_parameters_are_skipped_and_unused_ones_get_zero_gradients() {
    let model = Linear::new();
    let rhs = model.rhs();
    let frozen = Tensor::ones([2], F64); // does not require gradients
    let unused = Tensor::ones([4], F64).set_requires_grad(true);
    let sol =
        tch::no_grad(|| OdeSolver::dopri5(1e-8, 1e-8).solve_at(&rhs, &[0.0, 1.0], &y0())).unwrap();
    let grad_ys = vec![
        vec![Tensor::zeros([3], F64), Tensor::zeros([1], F64)],
        vec![Tensor::ones([3], F64), Tensor::ones([1], F64)],
    ];
    let params = [model.a.shallow_clone(), frozen, unused];
    let adj = adjoint_gradients(
        &AdjointOptions::default(),
        &rhs,
        &params,
        &[0.0, 1.0],
        &sol.y,
        &grad_ys,
    )
    .unwrap();
    assert!(adj.params[0].is_some());
    assert!(adj.params[1].is_none());
    let unused_grad = adj.params[2].as_ref().unwrap();
    assert_eq!(unused_grad.abs().max().double_value(&[]), 0.0);
}

#[test]
fn without_trainable_parameters_only_the_state_is_differentiated() {
    let model = Linear::new();
    let rhs = model.rhs();
    let sol =
        tch::no_grad(|| OdeSolver::dopri5(1e-9, 1e-9).solve_at(&rhs, &[0.0, 1.0], &y0())).unwrap();
    let grad_ys = vec![
        vec![Tensor::zeros([3], F64), Tensor::zeros([1], F64)],
        vec![Tensor::ones([3], F64), Tensor::ones([1], F64)],
    ];
    let options = AdjointOptions {
        solver: OdeSolver::dopri5(1e-9, 1e-9),
        seminorm: false,
    };
    let with = adjoint_gradients(
        &options,
        &rhs,
        &[model.a.shallow_clone()],
        &[0.0, 1.0],
        &sol.y,
        &grad_ys,
    )
    .unwrap();
    // All frozen, or none given: no parameter gradient, and the same dL/dy(t_0) to the tolerance.
    let frozen = [model.a.detach(), model.b.detach()];
    for params in [&frozen[..], &[]] {
        let without =
            adjoint_gradients(&options, &rhs, params, &[0.0, 1.0], &sol.y, &grad_ys).unwrap();
        assert!(without.params.iter().all(Option::is_none));
        assert_eq!(without.params.len(), params.len());
        for (a, b) in without.y0.iter().zip(&with.y0) {
            let err = max_rel(a, b);
            assert!(err < 1e-7, "relative difference {err}");
        }
    }
}

#[test]
fn mismatched_cotangents_are_a_typed_error() {
    let model = Linear::new();
    let rhs = model.rhs();
    let ys = vec![y0(), y0()];
    let adjoint = |cotangents: &[Vec<Tensor>]| {
        adjoint_gradients(
            &AdjointOptions::default(),
            &rhs,
            &[],
            &[0.0, 1.0],
            &ys,
            cotangents,
        )
        .unwrap_err()
    };
    let e = adjoint(&[y0()]);
    assert!(matches!(e, OdeError::InvalidOptions(_)), "{e}");
    let e = adjoint(&[y0(), vec![Tensor::zeros([2], F64), Tensor::zeros([1], F64)]]);
    assert!(e.to_string().contains("cotangent"), "{e}");
    // A state without components, and parameters of another kind than the first one.
    let empty = adjoint_gradients(
        &AdjointOptions::default(),
        &rhs,
        &[],
        &[0.0, 1.0],
        &[vec![], vec![]],
        &[vec![], vec![]],
    )
    .unwrap_err();
    assert!(empty.to_string().contains("no components"), "{empty}");
    let mixed = [
        model.a.shallow_clone(),
        Tensor::ones([2], (Kind::Float, Device::Cpu)).set_requires_grad(true),
    ];
    let e = adjoint_gradients(
        &AdjointOptions::default(),
        &rhs,
        &mixed,
        &[0.0, 1.0],
        &ys,
        &[y0(), y0()],
    )
    .unwrap_err();
    assert!(e.to_string().contains("parameter 1"), "{e}");
}

/// The backward solve integrates the parameter gradients as one flat tensor but controls its
/// error per parameter tensor, as torchdiffeq's mixed norm over `(y, a, g_A, g_b)` does: the same
/// steps, evaluations and gradients as the augmented problem written out with one component per
/// parameter, and not those of one component for all parameter gradients together.
#[test]
fn the_backward_error_norm_measures_each_parameter_tensor_separately() {
    let model = Linear::new();
    let rhs = model.rhs();
    let solver = OdeSolver::dopri5(1e-5, 1e-5);
    let sol = tch::no_grad(|| solver.solve_at(&rhs, &[0.0, 2.0], &y0())).unwrap();
    let grad_ys = vec![
        vec![Tensor::zeros([3], F64), Tensor::zeros([1], F64)],
        vec![
            Tensor::from_slice(&[1.0f64, -2.0, 0.5]),
            Tensor::from_slice(&[0.01f64]),
        ],
    ];
    let options = AdjointOptions {
        solver: solver.clone(),
        seminorm: false,
    };
    let params = [model.a.shallow_clone(), model.b.shallow_clone()];
    let adj = adjoint_gradients(&options, &rhs, &params, &[0.0, 2.0], &sol.y, &grad_ys).unwrap();

    // The augmented dynamics of `Linear` in closed form, [u, s, a_u, a_s, g_A, g_b] (`flat`:
    // false) or with the parameter gradients as one flat component [.., g] (`flat`: true).
    let (a, b) = (model.a.detach(), model.b.detach());
    let augmented = |flat: bool| {
        let (a, b) = (a.shallow_clone(), b.shallow_clone());
        move |_t: f64, y: &[Tensor]| -> Result<Vec<Tensor>, OdeError> {
            let (u, a_u, a_s) = (&y[0], &y[2], &y[3]);
            let g_a = -a_u.outer(u);
            let g_b = -(a_s * u);
            let mut out = vec![
                a.matmul(u),
                (&b * u).sum(Kind::Double).reshape([1]),
                -(a.tr().matmul(a_u) + a_s * &b),
                a_s.zeros_like(),
            ];
            if flat {
                out.push(Tensor::cat(&[g_a.reshape([-1]), g_b], 0));
            } else {
                out.extend([g_a, g_b]);
            }
            Ok(out)
        }
    };
    let start = |flat: bool| {
        let mut aug: Vec<Tensor> = sol.y[1].iter().map(|t| t.shallow_clone()).collect();
        aug.extend(grad_ys[1].iter().map(|t| t.shallow_clone()));
        if flat {
            aug.push(Tensor::zeros([12], F64));
        } else {
            aug.extend([Tensor::zeros([3, 3], F64), Tensor::zeros([3], F64)]);
        }
        aug
    };
    let backward = options.solver.clone();
    let (per_tensor, stats) = backward
        .solve(&augmented(false), 2.0, 0.0, &start(false))
        .unwrap();
    // The last step size is the norm's fingerprint (the same to round-off).
    assert_eq!(
        (adj.stats.nfe, adj.stats.accepted, adj.stats.rejected),
        (stats.nfe, stats.accepted, stats.rejected)
    );
    let step_change = |s: f64| (s / stats.last_step - 1.0).abs();
    assert!(
        step_change(adj.stats.last_step) < 1e-9,
        "{:?} {stats:?}",
        adj.stats
    );
    for (got, want) in [
        (&adj.y0[0], &per_tensor[2]),
        (adj.params[0].as_ref().unwrap(), &per_tensor[4]),
        (adj.params[1].as_ref().unwrap(), &per_tensor[5]),
    ] {
        let err = max_rel(got, want);
        assert!(err < 1e-12, "relative difference {err}");
    }
    // One component for both gradients is a different (looser) norm: it takes other steps, so
    // the comparison above would see a change of norm.
    let (_, flat_stats) = backward
        .solve(&augmented(true), 2.0, 0.0, &start(true))
        .unwrap();
    assert!(
        step_change(flat_stats.last_step) > 1e-3,
        "{flat_stats:?} {stats:?}"
    );
}
