//! Adaptive step-size control: error norms, the step-size update, and the automatic first step.
//!
//! Step decisions are made on detached values (no autograd history), as in torchdiffeq: gradients
//! flow through the accepted steps, not through the choice of their sizes.

use crate::error::OdeError;
use crate::OdeRhs;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// How the scaled error of a state made of several tensors is reduced to one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ErrorNorm {
    /// Root mean square over all entries of all components together.
    Rms,
    /// The largest of the components' root-mean-square norms (torchdiffeq's norm for tuple
    /// states, so step counts match the reference): a small component such as the log-density
    /// is controlled as tightly as the large position component.
    #[default]
    MixedRms,
}

/// Per component, its sum of squares (in f64) and number of entries, with one host
/// synchronisation for the whole state (one per component if they lie on different devices).
fn rms_parts(v: &[Tensor]) -> Vec<(f64, usize)> {
    let sums: Vec<Tensor> = v
        .iter()
        .map(|t| t.detach().to_kind(Kind::Double).square().sum(Kind::Double))
        .collect();
    let values = match Tensor::f_stack(&sums, 0).and_then(Vec::<f64>::try_from) {
        Ok(values) => values,
        Err(_) => sums.iter().map(|s| s.double_value(&[])).collect(),
    };
    values
        .into_iter()
        .zip(v.iter().map(|t| t.numel()))
        .collect()
}

/// The components of `v` (a state or an error estimate of `rhs`'s problem) as the error norm
/// measures them: a component that `rhs` splits into parts ([`OdeRhs::norm_parts`]) is replaced by
/// its parts (views of its flattened entries, no copies).
///
/// Errors: [`OdeError::InvalidOptions`] when the parts' sizes are negative or do not add up to the
/// component's number of entries.
pub fn norm_components(rhs: &dyn OdeRhs, v: &[Tensor]) -> Result<Vec<Tensor>, OdeError> {
    let mut out = Vec::with_capacity(v.len());
    for (i, t) in v.iter().enumerate() {
        match rhs.norm_parts(i) {
            None => out.push(t.shallow_clone()),
            Some(sizes) => {
                let total: i64 = sizes.iter().sum();
                if total != t.numel() as i64 || sizes.iter().any(|&s| s < 0) {
                    return Err(OdeError::InvalidOptions(format!(
                        "the norm's parts of state component {i} ({sizes:?}) do not divide its {} \
                         entries",
                        t.numel()
                    )));
                }
                out.extend(t.reshape([-1]).split_with_sizes(sizes, 0));
            }
        }
    }
    Ok(out)
}

impl ErrorNorm {
    /// The norm of a state `v`.
    pub fn norm(self, v: &[Tensor]) -> f64 {
        let parts = rms_parts(v);
        match self {
            ErrorNorm::Rms => {
                let (sq, n) = parts
                    .iter()
                    .fold((0.0, 0usize), |(s, n), (ps, pn)| (s + ps, n + pn));
                (sq / n.max(1) as f64).sqrt()
            }
            ErrorNorm::MixedRms => parts
                .iter()
                .map(|(s, n)| (s / (*n).max(1) as f64).sqrt())
                .fold(0.0, |a: f64, b| {
                    if a.is_nan() || b.is_nan() {
                        f64::NAN
                    } else {
                        a.max(b)
                    }
                }),
        }
    }
}

/// `v / (atol + rtol * max(|y0|, |y1|))` per entry: the error scaled by the mixed tolerance.
pub fn scaled(v: &[Tensor], y0: &[Tensor], y1: &[Tensor], rtol: f64, atol: f64) -> Vec<Tensor> {
    v.iter()
        .zip(y0.iter().zip(y1))
        .map(|(e, (a, b))| {
            let scale = a.detach().abs().maximum(&b.detach().abs()) * rtol + atol;
            e.detach() / scale
        })
        .collect()
}

/// The factor by which to multiply the step after a step with scaled error norm `error_ratio`:
/// `safety * error_ratio^(-1/order)` clamped to `[dfactor, ifactor]` (Hairer, Norsett & Wanner,
/// "Solving ODEs I", eq. II.4.13), with no shrinking after an accepted step. `order` is the order
/// of the error estimate plus one (5 for dopri5).
pub fn step_factor(error_ratio: f64, order: u32, safety: f64, ifactor: f64, dfactor: f64) -> f64 {
    if error_ratio == 0.0 {
        return ifactor;
    }
    let dfactor = if error_ratio < 1.0 { 1.0 } else { dfactor };
    (safety * error_ratio.powf(-1.0 / order as f64)).clamp(dfactor, ifactor)
}

/// Hairer, Norsett & Wanner's automatic first step ("Solving ODEs I", section II.4, p. 169), one
/// extra evaluation of f. `tolerances` is `(rtol, atol)`; the norms cover the first `n_err`
/// components (see [`crate::OdeRhs::error_components`]). Returns the step's magnitude (positive)
/// and the evaluations made (1).
///
/// Errors: the right-hand side's errors.
#[allow(clippy::too_many_arguments)]
pub fn initial_step(
    rhs: &dyn OdeRhs,
    t0: f64,
    y0: &[Tensor],
    f0: &[Tensor],
    order: u32,
    tolerances: (f64, f64),
    norm: ErrorNorm,
    direction: f64,
    n_err: usize,
) -> Result<(f64, usize), OdeError> {
    let (rtol, atol) = tolerances;
    let n_err = n_err.min(y0.len());
    // The norm of `v` scaled by the tolerances at y0, over the components under error control.
    let scaled_norm = |v: &[Tensor]| {
        let y = &y0[..n_err];
        Ok::<_, OdeError>(norm.norm(&norm_components(
            rhs,
            &scaled(&v[..n_err], y, y, rtol, atol),
        )?))
    };
    let d0 = scaled_norm(y0)?;
    let d1 = scaled_norm(f0)?;
    let h0 = if d0 < 1e-5 || d1 < 1e-5 {
        1e-6
    } else {
        0.01 * d0 / d1
    };
    let y1: Vec<Tensor> = y0
        .iter()
        .zip(f0)
        .map(|(y, f)| y.detach() + f.detach() * (direction * h0))
        .collect();
    let f1 = tch::no_grad(|| rhs.eval(t0 + direction * h0, &y1))?;
    let diff: Vec<Tensor> = f1
        .iter()
        .zip(f0)
        .map(|(a, b)| a.detach() - b.detach())
        .collect();
    let d2 = scaled_norm(&diff)? / h0;
    let h1 = if d1.max(d2) <= 1e-15 {
        (h0 * 1e-3).max(1e-6)
    } else {
        (0.01 / d1.max(d2)).powf(1.0 / (order as f64 + 1.0))
    };
    Ok(((100.0 * h0).min(h1), 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_factor_is_clamped_and_never_shrinks_an_accepted_step() {
        assert_eq!(step_factor(0.0, 5, 0.9, 10.0, 0.2), 10.0);
        assert_eq!(step_factor(1e-30, 5, 0.9, 10.0, 0.2), 10.0);
        assert_eq!(step_factor(0.99, 5, 0.9, 10.0, 0.2), 1.0);
        assert_eq!(step_factor(1e9, 5, 0.9, 10.0, 0.2), 0.2);
        let f = step_factor(2.0, 5, 0.9, 10.0, 0.2);
        assert!((f - 0.9 * 2f64.powf(-0.2)).abs() < 1e-15);
    }

    #[test]
    fn norms_of_a_two_component_state() {
        let a = Tensor::from_slice(&[3.0f64, 4.0]);
        let b = Tensor::from_slice(&[0.0f64, 0.0, 0.0, 0.0]);
        let v = [a, b];
        assert!((ErrorNorm::MixedRms.norm(&v) - (12.5f64).sqrt()).abs() < 1e-12);
        assert!((ErrorNorm::Rms.norm(&v) - (25.0f64 / 6.0).sqrt()).abs() < 1e-12);
        // A NaN in any component makes the norm NaN, whatever the order of the components.
        let nan = || Tensor::from_slice(&[f64::NAN]);
        let one = || Tensor::from_slice(&[1.0f64]);
        for v in [[nan(), one()], [one(), nan()]] {
            assert!(ErrorNorm::MixedRms.norm(&v).is_nan());
            assert!(ErrorNorm::Rms.norm(&v).is_nan());
        }
    }

    /// A right-hand side whose second component is two parts of 2 and 3 entries (or, wrongly,
    /// parts of 2 and 2).
    struct Parted(&'static [i64]);

    impl OdeRhs for Parted {
        fn eval(&self, _t: f64, y: &[Tensor]) -> Result<Vec<Tensor>, OdeError> {
            Ok(y.iter().map(|t| t.shallow_clone()).collect())
        }

        fn norm_parts(&self, component: usize) -> Option<&[i64]> {
            (component == 1).then_some(self.0)
        }
    }

    #[test]
    fn a_component_in_parts_is_measured_as_separate_components() {
        let a = Tensor::from_slice(&[1.0f64]);
        let b = Tensor::from_slice(&[3.0f64, 4.0, 1.0, 1.0, 1.0]);
        let v = [a.shallow_clone(), b.view([5])];
        let parts = norm_components(&Parted(&[2, 3]), &v).unwrap();
        assert_eq!(parts.len(), 3);
        let separate = [
            a,
            Tensor::from_slice(&[3.0f64, 4.0]),
            Tensor::from_slice(&[1.0f64, 1.0, 1.0]),
        ];
        for norm in [ErrorNorm::MixedRms, ErrorNorm::Rms] {
            assert_eq!(norm.norm(&parts), norm.norm(&separate));
        }
        assert!((ErrorNorm::MixedRms.norm(&parts) - (12.5f64).sqrt()).abs() < 1e-12);
        let e = norm_components(&Parted(&[2, 2]), &v).unwrap_err();
        assert!(e.to_string().contains("component 1"), "{e}");
    }
}
