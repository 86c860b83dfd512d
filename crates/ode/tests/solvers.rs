//! Solver correctness against closed-form solutions, orders of accuracy, and typed errors.

use ode::stepper::rk_step;
use ode::{Method, OdeError, OdeSolver, SolverOptions};
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

fn decay(_t: f64, y: &[Tensor]) -> Result<Vec<Tensor>, OdeError> {
    Ok(vec![-&y[0]])
}

/// y' = A y with A = [[0, 1], [-1, 0]] (harmonic oscillator): y(t) = R(t) y0, R a rotation.
fn oscillator(_t: f64, y: &[Tensor]) -> Result<Vec<Tensor>, OdeError> {
    let a = Tensor::from_slice(&[0.0, 1.0, -1.0, 0.0])
        .to_kind(Kind::Double)
        .view([2, 2]);
    Ok(vec![y[0].matmul(&a.tr())])
}

fn value(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.flatten(0, -1)).unwrap()
}

#[test]
fn dopri5_solves_exponential_decay_within_tolerance() {
    let y0 = Tensor::from_slice(&[1.0, 2.0, -3.0]).to_kind(Kind::Double);
    for tol in [1e-4, 1e-6, 1e-8] {
        let (y, stats) = OdeSolver::dopri5(tol, tol)
            .solve(&decay, 0.0, 1.0, &[y0.shallow_clone()])
            .unwrap();
        let exact = &y0 * (-1f64).exp();
        let err = (&y[0] - exact).abs().max().double_value(&[]);
        // Local error control keeps the global error within a small multiple of the tolerance.
        assert!(err < 10.0 * tol, "tol {tol}: error {err}, {stats:?}");
        assert!(
            stats.accepted > 0 && stats.nfe == 2 + 6 * (stats.accepted + stats.rejected),
            "{stats:?}"
        );
    }
    // The caller's tensor is untouched.
    assert_eq!(value(&y0), vec![1.0, 2.0, -3.0]);
}

#[test]
fn dopri5_solves_a_linear_system_forwards_and_backwards() {
    let y0 = Tensor::from_slice(&[1.0, 0.5])
        .to_kind(Kind::Double)
        .view([1, 2]);
    let t1 = 3.0f64;
    let solver = OdeSolver::dopri5(1e-8, 1e-8);
    let (y, _) = solver
        .solve(&oscillator, 0.0, t1, &[y0.shallow_clone()])
        .unwrap();
    // y' = A y with A = [[0,1],[-1,0]]: y1(t) = y1 cos t + y2 sin t, y2(t) = -y1 sin t + y2 cos t.
    let exact = [t1.cos() + 0.5 * t1.sin(), -t1.sin() + 0.5 * t1.cos()];
    let got = value(&y[0]);
    for (g, e) in got.iter().zip(exact) {
        assert!((g - e).abs() < 1e-7, "{got:?} vs {exact:?}");
    }
    let (back, _) = solver.solve(&oscillator, t1, 0.0, &y).unwrap();
    assert!((back[0].shallow_clone() - y0).abs().max().double_value(&[]) < 1e-7);
}

#[test]
fn output_times_are_hit_exactly() {
    let y0 = Tensor::ones([2], F64);
    let times = [0.0, 0.25, 0.5, 1.0, 2.0];
    let sol = OdeSolver::dopri5(1e-9, 1e-9)
        .solve_at(&decay, &times, &[y0])
        .unwrap();
    assert_eq!(sol.y.len(), times.len());
    for (t, y) in sol.t.iter().zip(&sol.y) {
        assert!((y[0].double_value(&[0]) - (-t).exp()).abs() < 1e-8);
    }
}

/// Fitted slope of log(error) against log(h) for `method` taking fixed steps with the shared
/// Runge-Kutta stepper on y' = -y, y(0) = 1 over [0, 2], for `steps` steps.
fn observed_order(method: Method, steps: &[usize]) -> f64 {
    let rhs = decay;
    let exact = (-2f64).exp();
    let points: Vec<(f64, f64)> = steps
        .iter()
        .map(|&n| {
            let h = 2.0 / n as f64;
            let mut y = vec![Tensor::ones([1], F64)];
            for i in 0..n {
                let t = i as f64 * h;
                let k1 = rhs(t, &y).unwrap();
                y = rk_step(&rhs, method.tableau(), t, &y, h, &k1).unwrap().y;
            }
            let err = (y[0].double_value(&[0]) - exact).abs();
            (h.ln(), err.ln())
        })
        .collect();
    let n = points.len() as f64;
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    cov / var
}

#[test]
fn every_method_converges_at_its_order_with_fixed_steps() {
    for method in Method::ALL {
        let p = method.tableau().order as f64;
        // In the asymptotic range (tsit5's small leading error term lets the next order show
        // at coarse steps), with the error far above round-off (1e-13 at 128 steps).
        let steps: &[usize] = match method.tableau().order {
            0..=4 => &[16, 32, 64, 128],
            _ => &[32, 64, 128],
        };
        let slope = observed_order(method, steps);
        eprintln!("{method:?}: fitted order {slope:.3} (order {p})");
        assert!(
            (slope - p).abs() < 0.3,
            "{method:?}: slope {slope}, order {p}"
        );
    }
}

#[test]
fn fixed_step_solves_take_the_requested_steps() {
    for method in [Method::Euler, Method::Midpoint, Method::Rk4] {
        let (_, stats) = OdeSolver::fixed(method, 0.1)
            .solve(&decay, 0.0, 1.0, &[Tensor::ones([1], F64)])
            .unwrap();
        assert_eq!(stats.accepted, 10, "{method:?}");
        let stages = method.tableau().stages();
        assert_eq!(
            stats.nfe,
            1 + 10 * (stages - 1) + 10,
            "{method:?}: {stats:?}"
        );
    }
}

#[test]
fn a_stiff_problem_with_a_small_step_budget_returns_too_many_steps() {
    let stiff = |t: f64, y: &[Tensor]| -> Result<Vec<Tensor>, OdeError> {
        Ok(vec![(&y[0] - t.cos()) * -1e6])
    };
    let solver = OdeSolver {
        method: Method::Dopri5,
        options: SolverOptions {
            rtol: 1e-6,
            atol: 1e-6,
            max_steps: 50,
            ..Default::default()
        },
    };
    match solver.solve(&stiff, 0.0, 1.0, &[Tensor::zeros([1], F64)]) {
        Err(OdeError::TooManySteps { max_steps: 50, t }) => assert!(t < 1.0),
        other => panic!("expected TooManySteps, got {other:?}"),
    }
}

#[test]
fn a_nan_after_half_time_is_reported_near_that_time() {
    let poisoned = |t: f64, y: &[Tensor]| -> Result<Vec<Tensor>, OdeError> {
        Ok(vec![if t > 0.5 { &y[0] * f64::NAN } else { -&y[0] }])
    };
    let solver = OdeSolver {
        method: Method::Dopri5,
        options: SolverOptions {
            max_step: Some(0.05),
            ..Default::default()
        },
    };
    match solver.solve(&poisoned, 0.0, 1.0, &[Tensor::ones([3], F64)]) {
        Err(OdeError::NonFinite { t, .. }) => {
            assert!((0.45..=0.5).contains(&t), "reported at t = {t}")
        }
        other => panic!("expected NonFinite, got {other:?}"),
    }
}

#[test]
fn step_size_underflow_is_a_typed_error() {
    // A derivative that blows up as t -> 1: the step shrinks until it underflows.
    let blow_up = |t: f64, y: &[Tensor]| -> Result<Vec<Tensor>, OdeError> {
        Ok(vec![&y[0] * (1.0 / (1.0 - t).powi(3))])
    };
    let solver = OdeSolver {
        method: Method::Dopri5,
        options: SolverOptions {
            min_step: 1e-6,
            ..Default::default()
        },
    };
    match solver.solve(&blow_up, 0.0, 1.0, &[Tensor::ones([1], F64)]) {
        Err(OdeError::StepSizeUnderflow { t, h }) => {
            assert!(t > 0.9 && h < 1e-6, "t = {t}, h = {h}")
        }
        Err(OdeError::NonFinite { t, .. }) => assert!(t > 0.9, "t = {t}"),
        other => panic!("expected an underflow, got {other:?}"),
    }
}

#[test]
fn invalid_options_are_rejected() {
    let bad = OdeSolver {
        method: Method::Rk4,
        options: SolverOptions::default(),
    };
    assert!(matches!(
        bad.solve(&decay, 0.0, 1.0, &[Tensor::ones([1], F64)]),
        Err(OdeError::InvalidOptions(_))
    ));
    let bad = OdeSolver::dopri5(-1.0, 1e-3);
    assert!(matches!(bad.validate(), Err(OdeError::InvalidOptions(_))));
    let no_atol = OdeSolver::dopri5(1e-3, 0.0);
    assert!(matches!(
        no_atol.validate(),
        Err(OdeError::InvalidOptions(_))
    ));
    let mut bad_first = OdeSolver::dopri5(1e-3, 1e-3);
    bad_first.options.first_step = Some(f64::NAN);
    assert!(matches!(
        bad_first.validate(),
        Err(OdeError::InvalidOptions(_))
    ));
    let good = OdeSolver::dopri5(1e-3, 1e-3);
    assert!(matches!(
        good.solve_at(&decay, &[0.0, 1.0, 0.5], &[Tensor::ones([1], F64)]),
        Err(OdeError::InvalidOptions(_))
    ));
}

#[test]
fn gradients_flow_through_the_steps() {
    // d/dk of y(1) for y' = -k y, y(0) = 1 is -exp(-k).
    let k = Tensor::from_slice(&[0.7f64]).set_requires_grad(true);
    let rhs = |_t: f64, y: &[Tensor]| -> Result<Vec<Tensor>, OdeError> { Ok(vec![-(&y[0] * &k)]) };
    let (y, _) = OdeSolver::dopri5(1e-10, 1e-10)
        .solve(&rhs, 0.0, 1.0, &[Tensor::ones([1], F64)])
        .unwrap();
    y[0].sum(Kind::Double).backward();
    let g = k.grad().double_value(&[0]);
    assert!((g + (-0.7f64).exp()).abs() < 1e-8, "{g}");
}

#[test]
fn a_right_hand_side_of_the_wrong_shape_is_a_typed_error() {
    let wrong = |_t: f64, y: &[Tensor]| -> Result<Vec<Tensor>, OdeError> {
        Ok(vec![y[0].shallow_clone(), y[0].shallow_clone()])
    };
    let e = OdeSolver::dopri5(1e-4, 1e-4)
        .solve(&wrong, 0.0, 1.0, &[Tensor::ones([2], F64)])
        .unwrap_err();
    assert!(matches!(e, OdeError::Rhs { .. }), "{e}");
    assert!(e.to_string().contains("shapes"), "{e}");
}

#[test]
fn embedded_pairs_satisfy_their_order_conditions() {
    // Quadrature conditions sum_i b_i c_i^k = 1/(k+1) for k < p, and sum_ij b_i a_ij c_j = 1/6
    // (order >= 3), for the solution weights b (order p) and the embedded weights b - b_error
    // (order p - 1).
    for m in [Method::Bosh3, Method::Dopri5, Method::Tsit5] {
        let tab = m.tableau();
        let embedded: Vec<f64> = tab
            .b
            .iter()
            .zip(tab.b_error.unwrap())
            .map(|(b, e)| b - e)
            .collect();
        for (weights, order) in [(tab.b.to_vec(), tab.order), (embedded, tab.order - 1)] {
            for k in 0..order as i32 {
                let q: f64 = weights.iter().zip(tab.c).map(|(b, c)| b * c.powi(k)).sum();
                assert!(
                    (q - 1.0 / (k as f64 + 1.0)).abs() < 1e-12,
                    "{}: order {order}, k = {k}: {q}",
                    tab.name
                );
            }
            if order >= 3 {
                let third: f64 = (0..tab.stages())
                    .map(|i| {
                        weights[i] * tab.a[i].iter().zip(tab.c).map(|(a, c)| a * c).sum::<f64>()
                    })
                    .sum();
                assert!((third - 1.0 / 6.0).abs() < 1e-12, "{}: {third}", tab.name);
            }
        }
    }
}

/// With no error history the PI controller takes the classic step factor: on a solve that both
/// controllers finish in two accepted steps (y' = -y over [0, 0.7] at 1e-4, as an initialised
/// E-NF's solves), Hairer's PI controller (beta = 0.04) takes exactly the classic controller's
/// steps, rather than a damped first growth that costs a third step.
#[test]
fn the_pi_controller_starts_as_the_classic_one() {
    let y0 = Tensor::from_slice(&[1.0, 2.0, -3.0]).to_kind(Kind::Double);
    let solve = |pi_beta: f64| {
        let mut solver = OdeSolver::dopri5(1e-4, 1e-4);
        solver.options.pi_beta = pi_beta;
        solver
            .solve(&decay, 0.0, 0.7, &[y0.shallow_clone()])
            .unwrap()
    };
    let (pi, pi_stats) = solve(0.04);
    let (classic, classic_stats) = solve(0.0);
    assert_eq!(pi_stats.accepted, 2, "{pi_stats:?}");
    assert_eq!(pi_stats, classic_stats);
    assert_eq!(value(&pi[0]), value(&classic[0]));
}
