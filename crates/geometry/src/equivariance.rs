//! Reusable equivariance and invariance checks: given a function of a batch of graphs, compare
//! `f(g . input)` with `g . f(input)` for an element g of E(n) x S_M and report the largest deviation.
//!
//! Run them in f64: with f32 the round-off of a 3-layer EGNN is around 1e-6 and hides real errors.

use crate::error::GeometryError;
use crate::transform::Transform;
use tch::{Kind, Tensor};

/// A batch of graphs as a function under test sees it.
#[derive(Debug)]
pub struct Graphs {
    /// Positions `[batch, nodes, dims]`.
    pub positions: Tensor,
    /// Node features `[batch, nodes, nf]`, if the function takes any.
    pub features: Option<Tensor>,
    /// Node mask `[batch, nodes]`, 1 = real node.
    pub node_mask: Tensor,
}

impl Graphs {
    /// The batch moved by `g`: positions rotated, translated and permuted, features and mask permuted.
    ///
    /// Errors: [`GeometryError::Shape`] if the positions are not rank 3.
    pub fn transformed(&self, g: &Transform) -> Result<Graphs, GeometryError> {
        Ok(Graphs {
            positions: g.act_on_positions(&self.positions, Some(&self.node_mask))?,
            features: self.features.as_ref().map(|h| g.act_on_features(h)),
            node_mask: g.act_on_mask(&self.node_mask),
        })
    }
}

/// How the output of a function should transform when its input is moved by g.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Covariance {
    /// Per-graph quantities (a log-likelihood `[batch]`, say): unchanged.
    Invariant,
    /// Per-node invariant features `[batch, nodes, nf]`: permuted only.
    NodeFeatures,
    /// Per-node vectors `[batch, nodes, dims]` (a velocity): rotated and permuted, not translated.
    Vector,
    /// Per-node positions `[batch, nodes, dims]`: rotated, translated and permuted.
    Position,
}

/// Result of one check.
#[derive(Debug, Clone, Copy)]
pub struct EquivarianceReport {
    /// Largest absolute difference between `f(g . input)` and `g . f(input)`.
    pub max_abs_deviation: f64,
    /// Largest absolute entry of `f(input)`, to judge the deviation against.
    pub max_abs_output: f64,
    /// Determinant of the orthogonal part of g (-1 for a reflection).
    pub determinant: f64,
}

/// Compares `f(g . input)` with `g . f(input)` according to `covariance`.
///
/// Errors: whatever `f` returns, or [`GeometryError::Shape`] (converted into `E`) when the output's
/// shape does not fit `covariance`.
pub fn max_deviation<F, E>(
    mut f: F,
    input: &Graphs,
    g: &Transform,
    covariance: Covariance,
) -> Result<EquivarianceReport, E>
where
    F: FnMut(&Graphs) -> Result<Tensor, E>,
    E: From<GeometryError>,
{
    let out = f(input)?;
    let moved_out = f(&input.transformed(g)?)?;
    let expected = match covariance {
        Covariance::Invariant => out.shallow_clone(),
        Covariance::NodeFeatures => g.act_on_features(&out),
        Covariance::Vector => g.act_on_vectors(&out)?,
        Covariance::Position => g.act_on_positions(&out, Some(&input.node_mask))?,
    };
    if expected.size() != moved_out.size() {
        return Err(GeometryError::Shape {
            what: "output of the function under test",
            expected: "the same shape for the input and the moved input",
            got: moved_out.size(),
        }
        .into());
    }
    let max = |t: &Tensor| t.abs().max().to_kind(Kind::Double).double_value(&[]);
    Ok(EquivarianceReport {
        max_abs_deviation: max(&(moved_out - &expected)),
        max_abs_output: max(&out),
        determinant: g.determinant(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{centre, pairwise_sq_distances};
    use rand::{rngs::StdRng, SeedableRng};
    use tch::Device;

    fn graphs(seed: i64) -> Graphs {
        let _rng = crate::testing::seeded(seed);
        Graphs {
            positions: Tensor::randn([2, 5, 3], (Kind::Double, Device::Cpu)),
            features: None,
            node_mask: Tensor::ones([2, 5], (Kind::Double, Device::Cpu)),
        }
    }

    #[test]
    fn centring_is_equivariant_and_distances_invariant() {
        let mut rng = StdRng::seed_from_u64(1);
        let g = Transform::random(5, 3, 2.0, &mut rng);
        let input = graphs(0);
        let r = max_deviation(
            |x: &Graphs| centre(&x.positions, Some(&x.node_mask)),
            &input,
            &g,
            Covariance::Vector,
        )
        .unwrap();
        assert!(r.max_abs_deviation < 1e-12, "{r:?}");
        let r = max_deviation(
            |x: &Graphs| -> Result<Tensor, GeometryError> {
                Ok(pairwise_sq_distances(&x.positions).sum_dim_intlist(
                    &[1i64, 2][..],
                    false,
                    Kind::Double,
                ))
            },
            &input,
            &g,
            Covariance::Invariant,
        )
        .unwrap();
        assert!(r.max_abs_deviation < 1e-10, "{r:?}");
    }

    #[test]
    fn the_check_detects_a_function_that_is_not_equivariant() {
        let mut rng = StdRng::seed_from_u64(2);
        let g = Transform::random(5, 3, 0.0, &mut rng);
        // Adding a fixed direction breaks rotation equivariance.
        let bias = Tensor::from_slice(&[1.0f64, 0.0, 0.0]).view([1, 1, 3]);
        let r = max_deviation(
            |x: &Graphs| -> Result<Tensor, GeometryError> { Ok(&x.positions * 1.0 + &bias) },
            &graphs(1),
            &g,
            Covariance::Vector,
        )
        .unwrap();
        assert!(r.max_abs_deviation > 1e-3, "{r:?}");
    }
}
