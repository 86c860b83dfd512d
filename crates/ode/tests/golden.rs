//! Golden tests on classic non-stiff problems at rtol = atol = 1e-6: the global error, and the
//! number of function evaluations against a textbook dopri5.
//!
//! The textbook figures are SciPy 1.17's `solve_ivp(method="RK45")` (Dormand-Prince 5(4) with
//! Hairer, Norsett & Wanner's initial step and the classic step-size controller, RMS norm) on the
//! same problems and tolerances: exponential decay 164 NFE (error 4.3e-8), the e = 0.3 Kepler
//! orbit 182 NFE (7.1e-5), Van der Pol 1,142 NFE (2.1e-5). The reference values of Van der Pol are
//! SciPy's DOP853 at rtol = atol = 1e-13.

use ode::{Method, OdeError, OdeSolver};
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);
const TOL: f64 = 1e-6;

struct Golden {
    name: &'static str,
    t1: f64,
    y0: Vec<f64>,
    exact: Vec<f64>,
    /// SciPy RK45's NFE at the same tolerances.
    textbook_nfe: usize,
}

fn decay(_t: f64, y: &[Tensor]) -> Result<Vec<Tensor>, OdeError> {
    Ok(vec![-&y[0]])
}

/// The two-body problem in the plane, `y = (q1, q2, p1, p2)`, `q'' = -q / |q|^3`.
fn kepler(_t: f64, y: &[Tensor]) -> Result<Vec<Tensor>, OdeError> {
    let q = y[0].narrow(0, 0, 2);
    let p = y[0].narrow(0, 2, 2);
    let r3 = q.square().sum(Kind::Double).pow_tensor_scalar(1.5);
    Ok(vec![Tensor::cat(&[p, -(q / r3)], 0)])
}

/// Van der Pol with mu = 1: `y1' = y2`, `y2' = (1 - y1^2) y2 - y1`.
fn van_der_pol(_t: f64, y: &[Tensor]) -> Result<Vec<Tensor>, OdeError> {
    let (y1, y2) = (y[0].narrow(0, 0, 1), y[0].narrow(0, 1, 1));
    let dy2 = (-y1.square() + 1.0) * &y2 - &y1;
    Ok(vec![Tensor::cat(&[y2, dy2], 0)])
}

/// A right-hand side of a golden problem.
type Rhs = fn(f64, &[Tensor]) -> Result<Vec<Tensor>, OdeError>;

fn problems() -> Vec<(Golden, Rhs)> {
    let e: f64 = 0.3;
    let kepler0 = vec![1.0 - e, 0.0, 0.0, ((1.0 + e) / (1.0 - e)).sqrt()];
    vec![
        (
            Golden {
                name: "y' = -y on [0, 20]",
                t1: 20.0,
                y0: vec![1.0],
                exact: vec![(-20f64).exp()],
                textbook_nfe: 164,
            },
            decay,
        ),
        (
            Golden {
                name: "Kepler orbit, e = 0.3, one period",
                t1: 2.0 * std::f64::consts::PI,
                y0: kepler0.clone(),
                exact: kepler0,
                textbook_nfe: 182,
            },
            kepler,
        ),
        (
            Golden {
                name: "Van der Pol, mu = 1, on [0, 20]",
                t1: 20.0,
                y0: vec![2.0, 0.0],
                exact: vec![2.0081497621749382, -0.042508875273136626],
                textbook_nfe: 1142,
            },
            van_der_pol,
        ),
    ]
}

#[test]
fn dopri5_and_tsit5_meet_the_golden_errors_with_textbook_work() {
    for method in [Method::Dopri5, Method::Tsit5] {
        for (g, f) in problems() {
            let mut solver = OdeSolver::dopri5(TOL, TOL);
            solver.method = method;
            let y0 = Tensor::from_slice(&g.y0).to_kind(Kind::Double);
            let (y, stats) = solver.solve(&f, 0.0, g.t1, &[y0]).unwrap();
            let exact = Tensor::from_slice(&g.exact).to_kind(Kind::Double);
            let err = (&y[0] - exact).abs().max().double_value(&[]);
            eprintln!(
                "{method:?} {}: error {err:.2e}, {} NFE ({} accepted, {} rejected); textbook dopri5 {} NFE",
                g.name, stats.nfe, stats.accepted, stats.rejected, g.textbook_nfe
            );
            assert!(err < 1e-4, "{method:?} {}: error {err}", g.name);
            let ratio = stats.nfe as f64 / g.textbook_nfe as f64;
            assert!(
                (0.5..=1.5).contains(&ratio),
                "{method:?} {}: {} NFE against the textbook's {}",
                g.name,
                stats.nfe,
                g.textbook_nfe
            );
        }
    }
}

#[test]
fn solutions_at_requested_times_follow_the_orbit() {
    // t_eval through the Kepler orbit: the energy H = |p|^2 / 2 - 1 / |q| is conserved at every
    // output time to the tolerance's order.
    let (g, f) = problems().swap_remove(1);
    let times: Vec<f64> = (0..=10).map(|i| g.t1 * i as f64 / 10.0).collect();
    let sol = OdeSolver::dopri5(TOL, TOL)
        .solve_at(&f, &times, &[Tensor::from_slice(&g.y0)])
        .unwrap();
    let energy = |y: &Tensor| {
        let v = Vec::<f64>::try_from(y).unwrap();
        0.5 * (v[2] * v[2] + v[3] * v[3]) - 1.0 / (v[0] * v[0] + v[1] * v[1]).sqrt()
    };
    let h0 = energy(&sol.y[0][0]);
    for (t, y) in sol.t.iter().zip(&sol.y) {
        let drift = (energy(&y[0]) - h0).abs();
        assert!(drift < 1e-4, "t = {t}: energy drift {drift}");
    }
    let _ = F64;
}
