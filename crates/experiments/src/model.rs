//! The models of the paper, built from a configuration.

use crate::config::{FlowMethod, ModelConfig, RunConfig};
use crate::error::ExperimentError;
use egnn::{
    Dynamics, EgnnConfig, EgnnDynamics, EgnnError, GnnDynamics, KernelDynamics, Masks,
    SimpleDynamics, Velocity,
};
use flow::Cnf;
use ode::OdeSolver;
use tch::{nn, Tensor};

/// The dynamics of a run's flow, by [`FlowMethod`].
#[derive(Debug)]
pub enum FlowDynamics {
    /// E-NF: EGNN dynamics.
    Enf(EgnnDynamics),
    /// GNF, GNF-att, GNF-att-aug: GNN dynamics.
    Gnn(GnnDynamics),
    /// Simple dynamics (closed-form divergence).
    Simple(SimpleDynamics),
    /// Kernel dynamics (closed-form divergence).
    Kernel(KernelDynamics),
}

impl Dynamics for FlowDynamics {
    fn velocity(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        masks: &Masks,
    ) -> Result<Velocity, EgnnError> {
        match self {
            FlowDynamics::Enf(d) => d.velocity(t, x, h, masks),
            FlowDynamics::Gnn(d) => d.velocity(t, x, h, masks),
            FlowDynamics::Simple(d) => d.velocity(t, x, h, masks),
            FlowDynamics::Kernel(d) => d.velocity(t, x, h, masks),
        }
    }

    fn velocity_and_divergence(
        &self,
        t: f64,
        x: &Tensor,
        masks: &Masks,
    ) -> Option<Result<(Tensor, Tensor), EgnnError>> {
        match self {
            FlowDynamics::Enf(d) => d.velocity_and_divergence(t, x, masks),
            FlowDynamics::Gnn(d) => d.velocity_and_divergence(t, x, masks),
            FlowDynamics::Simple(d) => d.velocity_and_divergence(t, x, masks),
            FlowDynamics::Kernel(d) => d.velocity_and_divergence(t, x, masks),
        }
    }

    fn velocity_jvp(
        &self,
        t: f64,
        x: &Tensor,
        h: Option<&Tensor>,
        dx: &Tensor,
        dh: Option<&Tensor>,
        masks: &Masks,
    ) -> Option<Result<(Velocity, Velocity), EgnnError>> {
        match self {
            FlowDynamics::Enf(d) => d.velocity_jvp(t, x, h, dx, dh, masks),
            FlowDynamics::Gnn(d) => d.velocity_jvp(t, x, h, dx, dh, masks),
            FlowDynamics::Simple(d) => d.velocity_jvp(t, x, h, dx, dh, masks),
            FlowDynamics::Kernel(d) => d.velocity_jvp(t, x, h, dx, dh, masks),
        }
    }
}

/// A flow over positions with the dynamics of `model.method` (E-NF by default). The var store owns
/// the parameters (path `dynamics.*`: `dynamics.egnn.*` for E-NF, `dynamics.gnn.*` for the GNF
/// methods, `dynamics.potential.*` for simple dynamics, `dynamics.weights` and the kernels for
/// kernel dynamics).
pub struct EnfModel {
    /// The parameters.
    pub vs: nn::VarStore,
    /// The flow.
    pub flow: Cnf<FlowDynamics>,
}

impl std::fmt::Debug for EnfModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnfModel")
            .field("parameters", &self.n_parameters())
            .finish()
    }
}

impl EnfModel {
    /// Builds the model for positions in `n_dims` dimensions on `device`, with parameters
    /// initialised from libtorch's generator (seed it first with `tch::manual_seed` for a
    /// reproducible start).
    ///
    /// Errors: [`ExperimentError::Model`] for invalid hyper-parameters.
    pub fn new(
        config: &ModelConfig,
        n_dims: i64,
        solver: OdeSolver,
        device: tch::Device,
    ) -> Result<Self, ExperimentError> {
        let vs = nn::VarStore::new(device);
        let path = vs.root() / "dynamics";
        let gnn = |attention: bool| {
            let egnn = EgnnConfig {
                attention,
                ..config.egnn.clone()
            };
            GnnDynamics::new(path.clone(), &egnn, n_dims).map(FlowDynamics::Gnn)
        };
        let dynamics = match config.method {
            FlowMethod::Enf => {
                EgnnDynamics::new(path.clone(), &config.egnn, 0).map(FlowDynamics::Enf)
            }
            FlowMethod::Gnf => gnn(false),
            FlowMethod::GnfAtt | FlowMethod::GnfAttAug => gnn(true),
            FlowMethod::SimpleDynamics => {
                SimpleDynamics::new(path.clone(), &config.simple).map(FlowDynamics::Simple)
            }
            FlowMethod::KernelDynamics => {
                KernelDynamics::new(path.clone(), &config.kernel).map(FlowDynamics::Kernel)
            }
        }
        .map_err(|e| ExperimentError::Model(e.to_string()))?;
        Ok(EnfModel {
            vs,
            flow: Cnf::new(dynamics, solver),
        })
    }

    /// The model of a run: its model, solver and adjoint settings and how it takes the trace
    /// (`training.forward_mode_trace`), on `device`.
    ///
    /// Errors: as [`EnfModel::new`].
    pub fn for_run(config: &RunConfig, device: tch::Device) -> Result<Self, ExperimentError> {
        let n_dims = config.data.system.n_dims() as i64;
        let mut model = EnfModel::new(&config.model, n_dims, config.solver.clone(), device)?;
        if let Some(adjoint) = &config.adjoint {
            model.flow.adjoint = adjoint.clone();
        }
        model.flow.forward_mode_trace = config.training.forward_mode_trace;
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
