//! The distribution p(M) of the number of nodes of a graph (E-NF paper, section 4: molecules of
//! different sizes; FACTS.md section 1 "Prior"): the empirical histogram of the training split.
//! `log p(x, h, M) = log p(x, h | M) + log p(M)`; sampling draws M first.

use rand::Rng;
use tch::{Kind, Tensor};

use crate::error::FlowError;

/// Added to probabilities before the logarithm, as the reference (an unseen size then costs
/// about 69 nats instead of infinity).
pub const NODE_COUNT_LOG_EPS: f64 = 1e-30;

/// A categorical distribution over node counts `0 ..= max`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeCountDistribution {
    probs: Vec<f64>,
}

impl NodeCountDistribution {
    /// From a histogram: `counts[m]` = number of training graphs with `m` nodes.
    ///
    /// Errors: [`FlowError::Shape`] (with the histogram's length) when the counts sum to 0.
    pub fn from_histogram(counts: &[u64]) -> Result<Self, FlowError> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Err(FlowError::Shape {
                what: "node-count histogram",
                expected: "at least one graph".into(),
                got: vec![counts.len() as i64],
            });
        }
        Ok(NodeCountDistribution {
            probs: counts.iter().map(|&c| c as f64 / total as f64).collect(),
        })
    }

    /// `p(m)` (0 beyond the histogram).
    pub fn prob(&self, m: usize) -> f64 {
        self.probs.get(m).copied().unwrap_or(0.0)
    }

    /// `log(p(m) + 1e-30)` in nats.
    pub fn log_prob(&self, m: usize) -> f64 {
        (self.prob(m) + NODE_COUNT_LOG_EPS).ln()
    }

    /// `log p(M)` `[batch]` of each graph of `node_mask [batch, nodes]` (M = its real nodes), in
    /// `kind` on the mask's device.
    ///
    /// Errors: [`FlowError::Shape`] when the mask is not rank 2; libtorch's errors.
    pub fn log_prob_of_mask(&self, node_mask: &Tensor, kind: Kind) -> Result<Tensor, FlowError> {
        if node_mask.dim() != 2 {
            return Err(FlowError::Shape {
                what: "node mask",
                expected: "[batch, nodes]".into(),
                got: node_mask.size(),
            });
        }
        let counts: Vec<f64> = node_mask
            .to_kind(Kind::Double)
            .sum_dim_intlist(&[1i64][..], false, Kind::Double)
            .to_device(tch::Device::Cpu)
            .try_into()?;
        let lp: Vec<f64> = counts
            .iter()
            .map(|&c| self.log_prob(c.round() as usize))
            .collect();
        Ok(Tensor::from_slice(&lp)
            .to_kind(kind)
            .to_device(node_mask.device()))
    }

    /// Entropy `-sum p log p` in nats.
    pub fn entropy(&self) -> f64 {
        -self
            .probs
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| p * p.ln())
            .sum::<f64>()
    }

    /// Draws a node count.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let mut r: f64 = rng.random();
        for (m, &p) in self.probs.iter().enumerate() {
            if r < p {
                return m;
            }
            r -= p;
        }
        self.probs.iter().rposition(|&p| p > 0.0).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn probabilities_logs_and_samples_follow_the_histogram() {
        let d = NodeCountDistribution::from_histogram(&[0, 0, 1, 3]).unwrap();
        assert_eq!(d.prob(3), 0.75);
        assert!((d.log_prob(2) - 0.25f64.ln()).abs() < 1e-12);
        assert!((d.log_prob(1) - 1e-30f64.ln()).abs() < 1e-9);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let n3 = (0..4000).filter(|_| d.sample(&mut rng) == 3).count();
        assert!((n3 as f64 / 4000.0 - 0.75).abs() < 0.03);
        let mask = Tensor::from_slice(&[1.0f32, 1.0, 0.0, 1.0, 1.0, 1.0]).view([2, 3]);
        let lp: Vec<f64> = d
            .log_prob_of_mask(&mask, Kind::Double)
            .unwrap()
            .try_into()
            .unwrap();
        assert!((lp[0] - 0.25f64.ln()).abs() < 1e-12 && (lp[1] - 0.75f64.ln()).abs() < 1e-12);
        assert!(NodeCountDistribution::from_histogram(&[0, 0]).is_err());
    }
}
