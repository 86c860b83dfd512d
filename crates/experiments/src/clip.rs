//! Adaptive gradient clipping (the E-NF reference's `gradient_clipping`, used for QM9 and QM9
//! positional): gradients are clipped, as one vector, to a limit that follows the recent norms.

use std::collections::VecDeque;

use tch::{Kind, Tensor};

/// Checkpoint metadata key of the clipper's record ([`GradientClipper::to_metadata`]).
pub const METADATA_KEY: &str = "clipper_norms";

/// Adaptive gradient clipping as the reference's QM9 training: the limit is `1.5 mean + 2 std`
/// (sample standard deviation) of the last 50 recorded norms; a larger norm is clipped to the
/// limit and the limit recorded, otherwise the norm is. The record starts with one large value
/// (3000) that is flushed out as training proceeds.
#[derive(Debug, Clone, PartialEq)]
pub struct GradientClipper {
    norms: VecDeque<f64>,
    capacity: usize,
}

impl Default for GradientClipper {
    fn default() -> Self {
        GradientClipper {
            norms: VecDeque::from([3000.0]),
            capacity: 50,
        }
    }
}

impl GradientClipper {
    /// A clipper with the given record of norms (most recent last; the default's single 3000
    /// when empty), as saved by [`GradientClipper::norms`].
    pub fn from_norms(norms: Vec<f64>) -> Self {
        let mut c = GradientClipper::default();
        if !norms.is_empty() {
            c.norms = norms.into_iter().collect();
        }
        c
    }

    /// The record as a checkpoint metadata entry: key [`METADATA_KEY`], value the norms as a
    /// JSON array (oldest first).
    pub fn to_metadata(&self) -> (String, String) {
        (
            METADATA_KEY.to_string(),
            serde_json::to_string(&self.norms()).unwrap_or_default(),
        )
    }

    /// The clipper saved in a checkpoint's `metadata` by [`GradientClipper::to_metadata`]; the
    /// default clipper when the entry is absent (a checkpoint of a run without clipping).
    ///
    /// Errors: a message naming the entry when it is not a JSON array of numbers.
    pub fn from_metadata(
        metadata: &std::collections::HashMap<String, String>,
    ) -> Result<Self, String> {
        match metadata.get(METADATA_KEY) {
            None => Ok(GradientClipper::default()),
            Some(text) => serde_json::from_str::<Vec<f64>>(text)
                .map(GradientClipper::from_norms)
                .map_err(|e| format!("{METADATA_KEY} in the metadata: {e}")),
        }
    }

    /// The recorded norms, oldest first.
    pub fn norms(&self) -> Vec<f64> {
        self.norms.iter().copied().collect()
    }

    /// The current limit: `1.5 mean + 2 std` of the recorded norms (std 0 for one record).
    pub fn limit(&self) -> f64 {
        let n = self.norms.len() as f64;
        let mean = self.norms.iter().sum::<f64>() / n;
        let var = if self.norms.len() > 1 {
            self.norms.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)
        } else {
            0.0
        };
        1.5 * mean + 2.0 * var.sqrt()
    }

    /// Clips `grads` (all of them, as one vector) to the current limit in place of returning new
    /// tensors, records the norm, and returns `(norm before clipping, limit)`.
    pub fn clip(&mut self, grads: &mut [Option<Tensor>]) -> (f64, f64) {
        let limit = self.limit();
        let norm = grads
            .iter()
            .flatten()
            .map(|g| g.square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt();
        if norm > limit {
            let scale = limit / (norm + 1e-6);
            for g in grads.iter_mut().flatten() {
                *g = &*g * scale;
            }
        }
        self.norms.push_back(norm.min(limit));
        if self.norms.len() > self.capacity {
            self.norms.pop_front();
        }
        (norm, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipper_limit_follows_the_recent_norms_and_clips() {
        let mut c = GradientClipper::default();
        assert_eq!(c.limit(), 4500.0);
        let mut g = vec![Some(Tensor::from_slice(&[3.0f64, 4.0]))];
        let (norm, _) = c.clip(&mut g);
        assert_eq!(norm, 5.0);
        // Records 3000 and 5: mean 1502.5, sample std 2117.8.
        let expected = 1.5 * 1502.5 + 2.0 * ((1497.5f64.powi(2) * 2.0) / 1.0).sqrt();
        assert!((c.limit() - expected).abs() < 1e-9);
        let mut c = GradientClipper {
            norms: VecDeque::from([1.0, 1.0]),
            capacity: 50,
        };
        let mut g = vec![Some(Tensor::from_slice(&[30.0f64, 40.0])), None];
        let (norm, limit) = c.clip(&mut g);
        assert_eq!((norm, limit), (50.0, 1.5));
        let clipped = g[0].as_ref().unwrap().square().sum(Kind::Double).sqrt();
        assert!((clipped.double_value(&[]) - 1.5).abs() < 1e-6);
        assert_eq!(c.norms.back(), Some(&1.5));
    }
}
