//! Arithmetic on ODE states made of several tensors.

use tch::{Kind, Tensor};

/// `y + sum_i c_i k_i` component by component, skipping zero coefficients. `y` and every `k_i` are
/// states with the same components and shapes; `terms` pairs coefficients with states.
///
/// Several terms are combined as one stacked matrix product per component, which keeps the number
/// of libtorch operations (and autograd nodes) independent of the number of stages.
pub fn add_combination(y: &[Tensor], terms: &[(f64, &[Tensor])]) -> Vec<Tensor> {
    let terms: Vec<&(f64, &[Tensor])> = terms.iter().filter(|(c, _)| *c != 0.0).collect();
    y.iter()
        .enumerate()
        .map(|(i, yi)| match terms.as_slice() {
            [] => yi.shallow_clone(),
            [(c, k)] => yi + &k[i] * *c,
            [(c0, k0), (c1, k1)] => yi + &k0[i] * *c0 + &k1[i] * *c1,
            many => {
                let stacked = Tensor::stack(
                    &many
                        .iter()
                        .map(|(_, k)| k[i].flatten(0, -1))
                        .collect::<Vec<_>>(),
                    0,
                );
                let coefs: Vec<f64> = many.iter().map(|(c, _)| *c).collect();
                let coefs = Tensor::from_slice(&coefs)
                    .to_kind(yi.kind())
                    .to_device(yi.device());
                yi + coefs.matmul(&stacked).view_as(yi)
            }
        })
        .collect()
}

/// `sum_i c_i k_i` component by component (as [`add_combination`] without the base point).
pub fn combination(terms: &[(f64, &[Tensor])]) -> Vec<Tensor> {
    let first = terms[0].1;
    let zero: Vec<Tensor> = first.iter().map(|t| t.zeros_like()).collect();
    add_combination(&zero, terms)
}

/// Whether every entry of every component is finite (one host synchronisation for the state,
/// one per component if they lie on different devices).
pub fn all_finite(y: &[Tensor]) -> bool {
    let each: Vec<Tensor> = y.iter().map(|t| t.isfinite().all()).collect();
    match Tensor::f_stack(&each, 0) {
        Ok(all) => all.numel() == 0 || all.all().int64_value(&[]) != 0,
        Err(_) => each.iter().all(|t| t.int64_value(&[]) != 0),
    }
}

/// Detached copies of the components (no autograd history), in the same kind.
pub fn detached(y: &[Tensor]) -> Vec<Tensor> {
    y.iter().map(|t| t.detach()).collect()
}

/// Total number of scalar entries of a state.
pub fn numel(y: &[Tensor]) -> usize {
    y.iter().map(|t| t.numel()).sum()
}

/// The largest absolute entry over all components, as f64 (a diagnostic).
pub fn max_abs(y: &[Tensor]) -> f64 {
    y.iter()
        .map(|t| t.abs().max().to_kind(Kind::Double).double_value(&[]))
        .fold(0.0, f64::max)
}
