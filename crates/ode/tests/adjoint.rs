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
}
