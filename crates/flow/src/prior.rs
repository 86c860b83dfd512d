//! Base densities of the flow (FACTS.md section 1, "Prior"; Satorras et al. 2021, section 4).

use crate::error::{expect_mask, expect_positions, FlowError};
use tch::{Device, Kind, Tensor};

const LOG_2PI: f64 = 1.837_877_066_409_345_5; // ln(2 pi)

fn real_nodes(node_mask: &Tensor, kind: Kind) -> Tensor {
    node_mask
        .to_kind(kind)
        .sum_dim_intlist(&[1i64][..], false, kind)
}

/// An isotropic standard Gaussian restricted to the zero-centre-of-mass subspace of positions: for
/// a graph with M real nodes in n dimensions it has (M - 1) n degrees of freedom and
/// `log p(z) = -||z||^2 / 2 - (M - 1) n log(2 pi) / 2` for centred z.
#[derive(Debug, Clone, Copy, Default)]
pub struct CentredGaussian;

impl CentredGaussian {
    /// Log-density `[batch]` of centred positions `z [batch, nodes, dims]` with `node_mask [batch,
    /// nodes]` (padded nodes must be zero). The positions are assumed centred; they are not
    /// re-centred here, so a caller's mistake shows up as a lower density rather than being hidden.
    ///
    /// Errors: [`FlowError::Shape`] if `z` is not rank 3 or the mask is not `[batch, nodes]`.
    pub fn log_prob(&self, z: &Tensor, node_mask: &Tensor) -> Result<Tensor, FlowError> {
        expect_positions(z)?;
        expect_mask(z, node_mask)?;
        let n_dims = z.size()[2] as f64;
        let sq = z.square().sum_dim_intlist(&[1i64, 2][..], false, z.kind());
        let dof = (real_nodes(node_mask, z.kind()) - 1.0) * n_dims;
        Ok(sq * -0.5 - dof * (0.5 * LOG_2PI))
    }

    /// Draws centred positions `[batch, nodes, n_dims]` for the graphs of `node_mask [batch, nodes]`:
    /// a standard normal with its mean over the real nodes removed; padded nodes are zero. Uses the
    /// libtorch generator (seed it with `tch::manual_seed`).
    pub fn sample(
        &self,
        node_mask: &Tensor,
        n_dims: i64,
        kind: Kind,
        device: Device,
    ) -> Result<Tensor, FlowError> {
        let size = node_mask.size();
        if size.len() != 2 {
            return Err(FlowError::Shape {
                what: "node mask",
                expected: "[batch, nodes]".into(),
                got: size,
            });
        }
        let eps = Tensor::randn([size[0], size[1], n_dims], (kind, device));
        Ok(geometry::centre(&eps, Some(&node_mask.to_kind(kind)))?)
    }
}

/// A standard Gaussian on the features of the real nodes: `log p(h) = -||h||^2 / 2 - M nf log(2 pi) / 2`.
#[derive(Debug, Clone, Copy, Default)]
pub struct StandardGaussian;

impl StandardGaussian {
    /// Log-density `[batch]` of `h [batch, nodes, nf]` (padded nodes must be zero).
    ///
    /// Errors: [`FlowError::Shape`] if `h` is not rank 3 or the mask is not `[batch, nodes]`.
    pub fn log_prob(&self, h: &Tensor, node_mask: &Tensor) -> Result<Tensor, FlowError> {
        expect_positions(h)?;
        expect_mask(h, node_mask)?;
        let nf = h.size()[2] as f64;
        let sq = h.square().sum_dim_intlist(&[1i64, 2][..], false, h.kind());
        Ok(sq * -0.5 - real_nodes(node_mask, h.kind()) * (0.5 * nf * LOG_2PI))
    }

    /// Draws `[batch, nodes, nf]` with padded nodes zero.
    pub fn sample(&self, node_mask: &Tensor, nf: i64, kind: Kind, device: Device) -> Tensor {
        let size = node_mask.size();
        Tensor::randn([size[0], size[1], nf], (kind, device))
            * node_mask.to_kind(kind).unsqueeze(-1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centred_gaussian_matches_the_closed_form_on_the_subspace() {
        // Two particles in 1D: the subspace is z = (s, -s)/sqrt(2) with s ~ N(0, 1), so the density
        // of a point with ||z|| = r is N(r; 0, 1) = exp(-r^2/2)/sqrt(2 pi): one degree of freedom.
        let z = Tensor::from_slice(&[0.3f64, -0.3]).view([1, 2, 1]);
        let mask = Tensor::ones([1, 2], (Kind::Double, Device::Cpu));
        let lp = CentredGaussian
            .log_prob(&z, &mask)
            .unwrap()
            .double_value(&[0]);
        let r2 = 0.18;
        assert!((lp - (-0.5 * r2 - 0.5 * LOG_2PI)).abs() < 1e-14);
    }

    #[test]
    fn samples_are_centred_and_zero_at_padding() {
        let _rng = geometry::testing::seeded(0);
        let mask = Tensor::from_slice(&[1.0f64, 1.0, 1.0, 0.0]).view([1, 4]);
        let z = CentredGaussian
            .sample(&mask, 3, Kind::Double, Device::Cpu)
            .unwrap();
        assert!(
            z.sum_dim_intlist(&[1i64][..], false, Kind::Double)
                .abs()
                .max()
                .double_value(&[])
                < 1e-14
        );
        assert_eq!(
            z.get(0).get(3).abs().sum(Kind::Double).double_value(&[]),
            0.0
        );
    }
}
