//! The relative-distance Jensen-Shannon divergence (the paper's Table 3, FACTS.md section 2): the
//! histogram of all interatomic distances of generated molecules against the same histogram over
//! the data, both normalised, compared by the Jensen-Shannon divergence.

use super::Molecule;
use crate::error::{DatasetError, Result};
use crate::stats::Histogram;

/// Default histogram range of interatomic distances, Angstrom: `[0, 13)` covers every QM9 pair
/// (the largest coordinate is 10.2 A from the centre).
pub const DISTANCE_RANGE: (f64, f64) = (0.0, 13.0);
/// Default number of bins.
pub const DISTANCE_BINS: usize = 100;

/// Histogram of all interatomic distances (each unordered pair once) of `molecules` over
/// `[lo, hi)` in `n_bins` bins; distances outside the range are clamped into the end bins.
///
/// # Errors
/// [`DatasetError::InvalidConfig`] for an empty or inverted range or zero bins;
/// [`DatasetError::InvalidValue`] for non-finite positions or positions not 3 per atom.
pub fn pair_distance_histogram(
    molecules: &[Molecule],
    (lo, hi): (f64, f64),
    n_bins: usize,
) -> Result<Histogram> {
    for (k, m) in molecules.iter().enumerate() {
        m.check_shape(k)?;
    }
    distance_histogram(
        molecules.iter().map(|m| m.positions.as_slice()),
        (lo, hi),
        n_bins,
    )
}

/// Histogram of all interatomic distances (each unordered pair once) of molecules given by their
/// positions alone (`[atoms, 3]` row-major, Angstrom; e.g. QM9-positional samples, which have no
/// atom types) over `[lo, hi)` in `n_bins` bins; distances outside the range are clamped into the
/// end bins.
///
/// # Errors
/// As [`pair_distance_histogram`]: [`DatasetError::InvalidConfig`] for a bad range or zero bins,
/// [`DatasetError::InvalidValue`] for non-finite positions or a length not a multiple of 3.
pub fn distance_histogram<'a>(
    molecules: impl IntoIterator<Item = &'a [f32]>,
    (lo, hi): (f64, f64),
    n_bins: usize,
) -> Result<Histogram> {
    if n_bins == 0 || !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(DatasetError::InvalidConfig(format!(
            "distance histogram needs n_bins >= 1 and finite lo < hi, got {n_bins} bins on \
             [{lo}, {hi})"
        )));
    }
    let mut d = Vec::new();
    for (k, x) in molecules.into_iter().enumerate() {
        if x.len() % 3 != 0 {
            return Err(DatasetError::InvalidValue {
                path: crate::IN_MEMORY.into(),
                object: format!("molecule {k}"),
                value: format!("{} coordinates", x.len()),
                reason: "expected 3 per atom".into(),
            });
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(DatasetError::InvalidValue {
                path: crate::IN_MEMORY.into(),
                object: format!("molecule {k}"),
                value: "non-finite position".into(),
                reason: "distances need finite positions".into(),
            });
        }
        let n = x.len() / 3;
        for i in 0..n {
            for j in i + 1..n {
                let r2: f64 = (0..3)
                    .map(|a| f64::from(x[3 * i + a] - x[3 * j + a]).powi(2))
                    .sum();
                d.push(r2.sqrt().clamp(lo, hi - (hi - lo) * 1e-9));
            }
        }
    }
    Histogram::new(&d, lo, hi, n_bins)
}

/// Jensen-Shannon divergence in nats, `JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2` with
/// `m = (p + q) / 2`, of two histograms normalised to probabilities (0 for identical ones, at most
/// ln 2).
///
/// # Errors
/// [`DatasetError::InvalidConfig`] when the lengths differ or a histogram is empty.
pub fn js_divergence(p: &[f64], q: &[f64]) -> Result<f64> {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    if p.len() != q.len() || sp <= 0.0 || sq <= 0.0 {
        return Err(DatasetError::InvalidConfig(format!(
            "Jensen-Shannon divergence of histograms of {} and {} bins with totals {sp} and {sq}",
            p.len(),
            q.len()
        )));
    }
    let kl_to_mean = |a: f64, b: f64| {
        if a > 0.0 {
            a * (2.0 * a / (a + b)).ln()
        } else {
            0.0
        }
    };
    Ok(p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let (a, b) = (a / sp, b / sq);
            0.5 * kl_to_mean(a, b) + 0.5 * kl_to_mean(b, a)
        })
        .sum())
}

/// The relative-distance JS divergence of `generated` against `data` with the default range and
/// bins ([`DISTANCE_RANGE`], [`DISTANCE_BINS`]).
///
/// # Errors
/// As [`pair_distance_histogram`] and [`js_divergence`].
pub fn relative_distance_js(generated: &[Molecule], data: &[Molecule]) -> Result<f64> {
    let g = pair_distance_histogram(generated, DISTANCE_RANGE, DISTANCE_BINS)?;
    let d = pair_distance_histogram(data, DISTANCE_RANGE, DISTANCE_BINS)?;
    js_divergence(&g.probabilities(), &d.probabilities())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_is_zero_for_equal_ln2_for_disjoint_and_symmetric() {
        assert!(
            js_divergence(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0])
                .unwrap()
                .abs()
                < 1e-15
        );
        let disjoint = js_divergence(&[1.0, 0.0], &[0.0, 5.0]).unwrap();
        assert!((disjoint - 2f64.ln()).abs() < 1e-15);
        let (a, b) = ([0.2, 0.5, 0.3], [0.4, 0.4, 0.2]);
        let ab = js_divergence(&a, &b).unwrap();
        assert!((ab - js_divergence(&b, &a).unwrap()).abs() < 1e-15 && ab > 0.0);
        assert!(js_divergence(&a, &[1.0]).is_err());
    }

    #[test]
    fn distance_histogram_counts_each_pair_once() {
        let m = Molecule {
            atomic_numbers: vec![6, 1, 1],
            positions: vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 2.5, 0.0],
        };
        let h = pair_distance_histogram(&[m.clone(), m], (0.0, 13.0), 13).unwrap();
        assert_eq!(h.total(), 6);
        let p = h.probabilities();
        // Distances 1, 2.5 and sqrt(7.25) = 2.69: bins 1, 2 and 2.
        assert!((p[1] - 1.0 / 3.0).abs() < 1e-12 && (p[2] - 2.0 / 3.0).abs() < 1e-12);
    }
}
