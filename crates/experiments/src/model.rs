//! The models of the paper, built from a configuration.

use crate::config::{ModelConfig, RunConfig};
use crate::error::ExperimentError;
use egnn::EgnnDynamics;
use flow::Cnf;
use ode::OdeSolver;
use tch::nn;

/// An E-NF over positions: EGNN dynamics in a continuous normalizing flow. The var store owns the
/// parameters (path `dynamics.egnn.*`).
pub struct EnfModel {
    /// The parameters.
    pub vs: nn::VarStore,
    /// The flow.
    pub flow: Cnf<EgnnDynamics>,
}

impl std::fmt::Debug for EnfModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnfModel")
            .field("parameters", &self.n_parameters())
            .finish()
    }
}

impl EnfModel {
    /// Builds the model on `device`, with parameters initialised from libtorch's generator (seed
    /// it first with `tch::manual_seed` for a reproducible start).
    ///
    /// Errors: [`ExperimentError::Model`] for invalid hyper-parameters.
    pub fn new(
        config: &ModelConfig,
        solver: OdeSolver,
        device: tch::Device,
    ) -> Result<Self, ExperimentError> {
        let vs = nn::VarStore::new(device);
        let dynamics = EgnnDynamics::new(vs.root() / "dynamics", &config.egnn, 0)
            .map_err(|e| ExperimentError::Model(e.to_string()))?;
        Ok(EnfModel {
            vs,
            flow: Cnf::new(dynamics, solver),
        })
    }

    /// The model of a run: its model, solver and adjoint settings, on `device`.
    ///
    /// Errors: as [`EnfModel::new`].
    pub fn for_run(config: &RunConfig, device: tch::Device) -> Result<Self, ExperimentError> {
        let mut model = EnfModel::new(&config.model, config.solver.clone(), device)?;
        if let Some(adjoint) = &config.adjoint {
            model.flow.adjoint = adjoint.clone();
        }
        Ok(model)
    }

    /// Number of scalar parameters.
    pub fn n_parameters(&self) -> usize {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel())
            .sum()
    }
}
