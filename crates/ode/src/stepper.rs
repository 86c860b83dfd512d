//! One step of any explicit Runge-Kutta method given by its Butcher tableau.

use crate::error::OdeError;
use crate::state::{add_combination, combination};
use crate::tableau::ButcherTableau;
use crate::OdeRhs;
use tch::Tensor;

/// The outcome of one attempted step from (t, y) to t + h.
#[derive(Debug)]
pub struct Step {
    /// The new solution at t + h.
    pub y: Vec<Tensor>,
    /// The error estimate `h sum_i b_error[i] k_i`, for adaptive methods.
    pub error: Option<Vec<Tensor>>,
    /// `f(t + h, y_new)` for FSAL methods: the next step's first stage.
    pub f_new: Option<Vec<Tensor>>,
    /// Right-hand-side evaluations this step made (k1 is the caller's).
    pub nfe: usize,
}

/// Checks that a right-hand side returned one derivative per state component, each of its
/// component's shape.
///
/// Errors: [`OdeError::Rhs`] at time `t` describing the mismatch.
pub fn check_components(f: &[Tensor], y: &[Tensor], t: f64) -> Result<(), OdeError> {
    let mismatch = f.len() != y.len() || f.iter().zip(y).any(|(a, b)| a.size() != b.size());
    if mismatch {
        let shapes = |v: &[Tensor]| v.iter().map(|t| t.size()).collect::<Vec<_>>();
        let message = format!(
            "derivative shapes {:?} do not match state shapes {:?}",
            shapes(f),
            shapes(y)
        );
        return Err(OdeError::rhs(
            t,
            std::io::Error::new(std::io::ErrorKind::InvalidData, message),
        ));
    }
    Ok(())
}

/// Takes one step of `tableau` from `(t, y)` with step `h` (negative to integrate backwards), given
/// `k1 = f(t, y)`.
///
/// Errors: the right-hand side's errors.
pub fn rk_step(
    rhs: &dyn OdeRhs,
    tableau: &ButcherTableau,
    t: f64,
    y: &[Tensor],
    h: f64,
    k1: &[Tensor],
) -> Result<Step, OdeError> {
    let s = tableau.stages();
    let mut k: Vec<Vec<Tensor>> = Vec::with_capacity(s);
    k.push(k1.iter().map(|t| t.shallow_clone()).collect());
    let mut last_input = None;
    for i in 1..s {
        let terms: Vec<(f64, &[Tensor])> = tableau.a[i]
            .iter()
            .zip(&k)
            .map(|(a, kj)| (h * a, kj.as_slice()))
            .collect();
        let yi = add_combination(y, &terms);
        let ti = t + tableau.c[i] * h;
        let ki = rhs.eval(ti, &yi)?;
        check_components(&ki, y, ti)?;
        k.push(ki);
        last_input = Some(yi);
    }
    let y_new = match (tableau.fsal, last_input) {
        (true, Some(yi)) => yi,
        _ => {
            let terms: Vec<(f64, &[Tensor])> = tableau
                .b
                .iter()
                .zip(&k)
                .map(|(b, kj)| (h * b, kj.as_slice()))
                .collect();
            add_combination(y, &terms)
        }
    };
    let error = tableau.b_error.map(|e| {
        let terms: Vec<(f64, &[Tensor])> = e
            .iter()
            .zip(&k)
            .map(|(e, kj)| (h * e, kj.as_slice()))
            .collect();
        combination(&terms)
    });
    let f_new = if tableau.fsal { k.pop() } else { None };
    Ok(Step {
        y: y_new,
        error,
        f_new,
        nfe: s - 1,
    })
}
