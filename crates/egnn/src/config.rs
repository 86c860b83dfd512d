//! Hyper-parameters of an EGNN (FACTS.md section 1; Satorras et al. 2021, appendix).

use serde::{Deserialize, Serialize};

/// How messages and coordinate updates are aggregated over a node's neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// Sum over neighbours (the paper's choice).
    #[default]
    Sum,
    /// Mean over the real neighbours.
    Mean,
}

/// Hyper-parameters of an EGNN used as flow dynamics. Defaults are the paper's DW4/LJ13 settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgnnConfig {
    /// Width of messages and node embeddings (paper: 32 for DW4/LJ13, 64 for QM9).
    pub hidden_nf: i64,
    /// Number of equivariant convolutions L (paper: 3 for DW4/LJ13, 6 for QM9).
    pub n_layers: i64,
    /// Gate each message by sigmoid(Linear(m_ij)).
    pub attention: bool,
    /// Bound the coordinate MLP's output by tanh, scaled by `coords_range / n_layers`.
    pub tanh: bool,
    /// Total coordinate range over all layers when `tanh` is on (paper: 15).
    pub coords_range: f64,
    /// Sum (paper) or mean aggregation.
    pub aggregation: Aggregation,
    /// Append the time t to the node features.
    pub condition_time: bool,
}

impl Default for EgnnConfig {
    fn default() -> Self {
        EgnnConfig {
            hidden_nf: 32,
            n_layers: 3,
            attention: true,
            tanh: true,
            coords_range: 15.0,
            aggregation: Aggregation::Sum,
            condition_time: true,
        }
    }
}

impl EgnnConfig {
    /// Checks ranges: `hidden_nf >= 1`, `n_layers >= 1`, a finite positive `coords_range`.
    pub fn validate(&self) -> Result<(), crate::EgnnError> {
        if self.hidden_nf < 1 {
            return Err(crate::EgnnError::Config(format!(
                "hidden_nf = {} must be >= 1",
                self.hidden_nf
            )));
        }
        if self.n_layers < 1 {
            return Err(crate::EgnnError::Config(format!(
                "n_layers = {} must be >= 1",
                self.n_layers
            )));
        }
        if !(self.coords_range.is_finite() && self.coords_range > 0.0) {
            return Err(crate::EgnnError::Config(format!(
                "coords_range = {} must be finite and positive",
                self.coords_range
            )));
        }
        Ok(())
    }
}
