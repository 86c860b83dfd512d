//! Centre-of-mass removal: the zero-centre-of-mass subspace on which E-NF positions live
//! (FACTS.md section 1, "Prior"; Satorras et al. 2021, section 4).

use crate::error::{expect_rank, GeometryError};
use tch::{Kind, Tensor};

/// Number of real nodes per graph: `node_mask [batch, nodes]` summed over nodes, shape `[batch]`.
pub fn node_count(node_mask: &Tensor) -> Tensor {
    node_mask.sum_dim_intlist(&[1i64][..], false, node_mask.kind())
}

/// Centre of mass over the real nodes: `x [batch, nodes, dims]`, optional `node_mask
/// [batch, nodes]` -> `[batch, 1, dims]`. Without a mask every node counts.
///
/// Errors: [`GeometryError::Shape`] if `x` is not rank 3 or the mask not rank 2.
pub fn centre_of_mass(x: &Tensor, node_mask: Option<&Tensor>) -> Result<Tensor, GeometryError> {
    expect_rank(x, 3, "positions", "[batch, nodes, dims]")?;
    match node_mask {
        None => Ok(x.mean_dim(&[1i64][..], true, x.kind())),
        Some(mask) => {
            expect_rank(mask, 2, "node_mask", "[batch, nodes]")?;
            let mask = mask.unsqueeze(-1).to_kind(x.kind());
            let total = (x * &mask).sum_dim_intlist(&[1i64][..], true, x.kind());
            let count = mask
                .sum_dim_intlist(&[1i64][..], true, x.kind())
                .clamp_min(1.0);
            Ok(total / count)
        }
    }
}

/// Removes the centre of mass of the real nodes: returns `x - mean` with padded nodes set to
/// exactly zero. `x [batch, nodes, dims]`, `node_mask [batch, nodes]` (1 = real) or `None`.
///
/// Errors: [`GeometryError::Shape`] for a wrong rank.
pub fn centre(x: &Tensor, node_mask: Option<&Tensor>) -> Result<Tensor, GeometryError> {
    let com = centre_of_mass(x, node_mask)?;
    let centred = x - com;
    Ok(match node_mask {
        None => centred,
        Some(mask) => centred * mask.unsqueeze(-1).to_kind(x.kind()),
    })
}

/// Largest absolute centre-of-mass coordinate over the batch (0 for a centred batch); a test helper.
pub fn max_centre_of_mass(x: &Tensor, node_mask: Option<&Tensor>) -> Result<f64, GeometryError> {
    Ok(centre_of_mass(x, node_mask)?
        .abs()
        .max()
        .to_kind(Kind::Double)
        .double_value(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centring_respects_the_mask_and_zeroes_padding() {
        let x = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0, 100.0, 100.0]).view([1, 3, 2]);
        let mask = Tensor::from_slice(&[1.0f64, 1.0, 0.0]).view([1, 3]);
        let c = centre(&x, Some(&mask)).unwrap();
        let v: Vec<f64> = c.view([-1]).try_into().unwrap();
        assert_eq!(v, vec![-1.0, -1.0, 1.0, 1.0, 0.0, 0.0]);
        assert!(max_centre_of_mass(&c, Some(&mask)).unwrap() < 1e-15);
    }

    #[test]
    fn wrong_rank_is_an_error() {
        let x = Tensor::zeros([3, 2], (Kind::Double, tch::Device::Cpu));
        assert!(matches!(centre(&x, None), Err(GeometryError::Shape { .. })));
    }
}
