//! Run configurations, read from TOML (serde). Unknown keys are errors, so a typo never silently
//! falls back to a default.

use crate::error::ExperimentError;
use egnn::{EgnnConfig, KernelConfig, SimpleConfig};
use flow::{Noise, TraceEstimator};
use ode::{AdjointOptions, OdeSolver};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use datasets::System;

/// Which data to train and evaluate on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The particle system.
    pub system: System,
    /// HDF5 file; generated on first use if missing. Default: `data/<system>.h5` (this project's
    /// own data, refused if an older version drew it with other settings); any other existing
    /// file is used as it is ([`RunConfig::load_dataset`]).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Training samples: the first `n_train` of the training split (FACTS.md 2).
    pub n_train: usize,
    /// Validate on the first `n_val` samples of the validation split only (a reduced protocol);
    /// absent: the whole split, as the paper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_val: Option<usize>,
    /// Report the test NLL on the first `n_test` samples of the test split only (a reduced
    /// protocol); absent: the whole split, as the paper.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_test: Option<usize>,
}

/// The flow's dynamics: E-NF or one of the paper's baselines (FACTS.md section 3; the GNF
/// methods also on QM9, Table 2, [`crate::qm9::Qm9ModelConfig::method`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FlowMethod {
    /// GNF: a plain graph neural network as dynamics ([`egnn::GnnDynamics`], no attention; the
    /// method decides, `model.egnn.attention` is not used).
    Gnf,
    /// GNF-att: GNF with the attention gate.
    GnfAtt,
    /// GNF-att-aug: GNF-att trained on a random rotation (Haar on SO(n)) of every training sample.
    GnfAttAug,
    /// Simple dynamics (Köhler et al. 2020): minus the gradient of a learned pair potential, with
    /// a closed-form divergence ([`egnn::SimpleDynamics`]).
    SimpleDynamics,
    /// Kernel dynamics (Köhler et al. 2020) with a closed-form divergence
    /// ([`egnn::KernelDynamics`]).
    KernelDynamics,
    /// The E-NF: EGNN dynamics ([`egnn::EgnnDynamics`]).
    #[default]
    Enf,
}

impl FlowMethod {
    /// Every method, in the order of the paper's Table 1.
    pub const ALL: [FlowMethod; 6] = [
        FlowMethod::Gnf,
        FlowMethod::GnfAtt,
        FlowMethod::GnfAttAug,
        FlowMethod::SimpleDynamics,
        FlowMethod::KernelDynamics,
        FlowMethod::Enf,
    ];

    /// The method's name in the paper's tables ("GNF-att", "E-NF", ...).
    pub fn paper_name(self) -> &'static str {
        match self {
            FlowMethod::Gnf => "GNF",
            FlowMethod::GnfAtt => "GNF-att",
            FlowMethod::GnfAttAug => "GNF-att-aug",
            FlowMethod::SimpleDynamics => "Simple dynamics",
            FlowMethod::KernelDynamics => "Kernel dynamics",
            FlowMethod::Enf => "E-NF",
        }
    }

    /// The method's name in configurations and on the command line ("gnf_att", "enf", ...).
    pub fn name(self) -> &'static str {
        match self {
            FlowMethod::Gnf => "gnf",
            FlowMethod::GnfAtt => "gnf_att",
            FlowMethod::GnfAttAug => "gnf_att_aug",
            FlowMethod::SimpleDynamics => "simple_dynamics",
            FlowMethod::KernelDynamics => "kernel_dynamics",
            FlowMethod::Enf => "enf",
        }
    }

    /// Whether training rotates every sample of a batch by its own random rotation (Haar on
    /// SO(n), [`geometry::random_rotation_batch`]): GNF-att-aug.
    pub fn augments_rotations(self) -> bool {
        self == FlowMethod::GnfAttAug
    }
}

impl std::str::FromStr for FlowMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let key = s.to_ascii_lowercase().replace(['-', ' '], "_");
        FlowMethod::ALL
            .into_iter()
            .find(|m| {
                m.name() == key
                    || m.paper_name().to_ascii_lowercase().replace(['-', ' '], "_") == key
            })
            .or(match key.as_str() {
                "kernel" => Some(FlowMethod::KernelDynamics),
                "simple" => Some(FlowMethod::SimpleDynamics),
                _ => None,
            })
            .ok_or_else(|| {
                let names: Vec<&str> = FlowMethod::ALL.iter().map(|m| m.name()).collect();
                format!("unknown method {s}: one of {}", names.join(", "))
            })
    }
}

/// The model's hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Which dynamics the flow uses.
    pub method: FlowMethod,
    /// The EGNN dynamics (method `enf`), and the GNN of the GNF methods (its `hidden_nf`,
    /// `n_layers` and `condition_time`).
    pub egnn: EgnnConfig,
    /// The simple dynamics (method `simple_dynamics`).
    pub simple: SimpleConfig,
    /// The kernel dynamics (method `kernel_dynamics`).
    pub kernel: KernelConfig,
}

/// Where the computation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// The CPU.
    #[default]
    Cpu,
    /// The first CUDA device (an error if libtorch sees none).
    Cuda,
}

impl DeviceChoice {
    /// The tch device.
    ///
    /// Errors: [`ExperimentError::Config`] when CUDA is asked for and not available.
    pub fn device(self) -> Result<tch::Device, ExperimentError> {
        match self {
            DeviceChoice::Cpu => Ok(tch::Device::Cpu),
            DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(tch::Device::Cuda(0)),
            DeviceChoice::Cuda => Err(ExperimentError::Config {
                key: "training.device".into(),
                message: "cuda requested but libtorch sees no CUDA device".into(),
            }),
        }
    }
}

/// How training computes parameter gradients through the ODE solve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GradientMethod {
    /// Backpropagation through the solver's accepted steps: no extra function evaluations, memory
    /// growing with the number of steps (small for DW4 and LJ13 batches).
    #[default]
    Backprop,
    /// The adjoint method (Chen et al. 2018), as the paper trained: flat memory, a backward solve
    /// with its own evaluations ([`RunConfig::adjoint`]).
    Adjoint,
}

/// The training protocol (FACTS.md section 3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Passes over the training samples.
    pub epochs: usize,
    /// Samples per optimiser step.
    pub batch_size: usize,
    /// AdamW learning rate (E-NF: 5e-4).
    pub lr: f64,
    /// AdamW weight decay (1e-12).
    pub weight_decay: f64,
    /// Use AMSGrad (the reference does).
    pub amsgrad: bool,
    /// Evaluate the validation NLL every this many epochs (and after the last).
    pub eval_every: usize,
    /// Trace estimator while training.
    pub train_trace: TraceEstimator,
    /// Gradients by backpropagation through the solver or by the adjoint method.
    pub gradients: GradientMethod,
    /// Weight of the ODE regulariser added to the mean NLL (Finlay et al. 2020, as the E-NF's
    /// QM9 trainings: per sample the integral of `||v||^2 + ||eps^T dv/dx||^2`, the second term
    /// with Hutchinson probes only; [`flow::Cnf::encode_regularised`]). 0 (Table 1) switches it
    /// off; Table 3 uses 1e-3. Either gradient method trains it.
    pub ode_regularization: f64,
    /// Clip the gradient norm adaptively ([`crate::clip::GradientClipper`]: 1.5 mean + 2 std of
    /// the last 50 norms), as the reference's QM9 trainings (Table 3); off for Table 1.
    pub clip_grad: bool,
    /// Trace estimator for the validation NLL that selects the best epoch. Hutchinson's estimate
    /// is unbiased and, on DW4, 8x cheaper than the exact trace (measured: 1.2 s against 9.2 s for
    /// 1,000 samples), so model selection does not dominate the run time.
    pub eval_trace: TraceEstimator,
    /// Trace estimator for the reported test NLL (exact for DW4, as the paper did).
    pub test_trace: TraceEstimator,
    /// Samples per evaluation batch.
    pub eval_batch_size: usize,
    /// Seed of parameter initialisation, batch order and Hutchinson probes.
    pub seed: u64,
    /// Device.
    pub device: DeviceChoice,
    /// Shards of each batch solved concurrently on their own threads (see
    /// [`crate::parallel`]); results depend on it, so it is part of the configuration.
    pub workers: usize,
    /// libtorch intra-op threads (0 = libtorch's default, one per core). The default is 1: the
    /// paper's batches are so small that splitting each op over threads costs more than it gains
    /// (DW4 on 2 cores: 0.40 s per step with 1 thread, 0.47 s with 2).
    pub threads: usize,
    /// Take the trace from the dynamics' forward-mode derivative where they have one (`J eps`
    /// beside the velocity; [`flow::Cnf::forward_mode_trace`]), in training and evaluation; the
    /// default `true` is 13-18% faster per training step and equal up to round-off. `false`
    /// takes it by autograd's vector-Jacobian product `eps^T J`, as the reference does. Results
    /// differ by round-off, so it is part of the run; configurations written before this key
    /// existed read as `true`.
    pub forward_mode_trace: bool,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            epochs: 300,
            batch_size: 100,
            lr: 5e-4,
            weight_decay: 1e-12,
            amsgrad: true,
            eval_every: 5,
            train_trace: TraceEstimator::Hutchinson(Noise::Rademacher),
            gradients: GradientMethod::Backprop,
            ode_regularization: 0.0,
            clip_grad: false,
            eval_trace: TraceEstimator::Hutchinson(Noise::Rademacher),
            test_trace: TraceEstimator::Exact,
            eval_batch_size: 500,
            seed: 0,
            device: DeviceChoice::Cpu,
            workers: 2,
            threads: 1,
            forward_mode_trace: true,
        }
    }
}

/// A whole run: data, model, solver, training. Serialised next to the run's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Data.
    pub data: DataConfig,
    /// Model.
    #[serde(default)]
    pub model: ModelConfig,
    /// ODE solver for training and evaluation (dopri5, rtol = atol = 1e-4 by default).
    #[serde(default)]
    pub solver: OdeSolver,
    /// Training protocol.
    #[serde(default)]
    pub training: TrainingConfig,
    /// The adjoint method's backward solve (with `training.gradients = "adjoint"`); absent: the
    /// forward `solver`'s method and tolerances with the classic controller over the whole
    /// augmented state, as the reference's `odeint_adjoint` ([`AdjointOptions::for_forward`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjoint: Option<AdjointOptions>,
}

impl RunConfig {
    /// The paper's E-NF configuration for one cell of Table 1 (FACTS.md section 3).
    ///
    /// Errors: [`ExperimentError::Config`] (key `data.n_train`) for a size outside the paper's sweep
    /// (DW4: 100, 1,000, 10,000, 100,000; LJ13: 10, 100, 1,000, 10,000); write a configuration file
    /// for other sizes.
    pub fn paper_cell(system: System, n_train: usize, seed: u64) -> Result<Self, ExperimentError> {
        Self::paper_cell_for(FlowMethod::Enf, system, n_train, seed)
    }

    /// The paper's configuration of `method` for one cell of Table 1 (FACTS.md section 3): the
    /// cell's epochs, batch size and evaluation interval; learning rate 5e-4 for E-NF and 1e-3 for
    /// the baselines; kernel dynamics' distance kernels over [0, 8] for DW4 and [0, 4] for LJ13
    /// (the range of their pair distances).
    ///
    /// Errors: as [`RunConfig::paper_cell`].
    pub fn paper_cell_for(
        method: FlowMethod,
        system: System,
        n_train: usize,
        seed: u64,
    ) -> Result<Self, ExperimentError> {
        let (epochs, batch_size, eval_every) = match (system, n_train) {
            (System::Dw4, 100) => (1000, 100, 20),
            (System::Dw4, 1_000) => (300, 100, 5),
            (System::Dw4, 10_000) => (50, 100, 1),
            (System::Dw4, 100_000) => (6, 100, 1),
            (System::Lj13, 10) => (500, 10, 10),
            (System::Lj13, 100) => (1000, 100, 25),
            (System::Lj13, 1_000) => (300, 100, 5),
            (System::Lj13, 10_000) => (50, 100, 1),
            _ => {
                return Err(ExperimentError::Config {
                    key: "data.n_train".into(),
                    message: format!(
                        "{n_train} is not a training-set size of the paper's {} sweep",
                        system.name()
                    ),
                })
            }
        };
        Ok(RunConfig {
            data: DataConfig {
                system,
                path: None,
                n_train,
                n_val: None,
                n_test: None,
            },
            model: ModelConfig {
                method,
                kernel: KernelConfig {
                    max_distance: match (method, system) {
                        (FlowMethod::KernelDynamics, System::Lj13) => 4.0,
                        _ => KernelConfig::default().max_distance,
                    },
                    ..KernelConfig::default()
                },
                ..ModelConfig::default()
            },
            solver: OdeSolver::default(),
            training: TrainingConfig {
                lr: match method {
                    FlowMethod::Enf => 5e-4,
                    _ => 1e-3,
                },
                epochs,
                batch_size,
                eval_every,
                seed,
                // The reference evaluates DW4 with the exact trace, LJ13 with Hutchinson's.
                test_trace: match system {
                    System::Dw4 => TraceEstimator::Exact,
                    _ => TraceEstimator::Hutchinson(Noise::Rademacher),
                },
                ..TrainingConfig::default()
            },
            adjoint: None,
        })
    }

    /// Whether `other` is the same run: equal in everything that can change its results, that
    /// is everything but where the data file lies (`data.path`), the device and the libtorch
    /// thread count. A run may be resumed, reused or merged under such differences (another
    /// machine of a cluster, another `--data-dir`).
    pub fn same_run(&self, other: &RunConfig) -> bool {
        let normalised = |c: &RunConfig| {
            let mut c = c.clone();
            c.data.path = None;
            c.training.device = DeviceChoice::Cpu;
            c.training.threads = 0;
            c
        };
        normalised(self) == normalised(other)
    }

    /// Parses TOML text; `origin` names the source in errors.
    ///
    /// Errors: [`ExperimentError::Config`] naming the key for unknown keys, wrong types or
    /// out-of-range values.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ExperimentError> {
        let config: RunConfig = toml::from_str(text).map_err(|e| ExperimentError::Config {
            key: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a TOML file.
    ///
    /// Errors: [`ExperimentError::Io`] if unreadable, [`ExperimentError::Config`] if invalid.
    pub fn from_file(path: &Path) -> Result<Self, ExperimentError> {
        let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks values that serde cannot: positive sizes and rates, valid solver and model options.
    ///
    /// Errors: [`ExperimentError::Config`] naming the key.
    pub fn validate(&self) -> Result<(), ExperimentError> {
        let bad = |key: &str, message: String| {
            Err(ExperimentError::Config {
                key: key.into(),
                message,
            })
        };
        let t = &self.training;
        if self.data.n_train == 0 {
            return bad("data.n_train", "must be at least 1".into());
        }
        if self.data.n_val == Some(0) || self.data.n_test == Some(0) {
            return bad(
                "data.n_val / data.n_test",
                "must be at least 1 when given".into(),
            );
        }
        if t.epochs == 0 {
            return bad("training.epochs", "must be at least 1".into());
        }
        if t.batch_size == 0 {
            return bad("training.batch_size", "must be at least 1".into());
        }
        if t.eval_batch_size == 0 {
            return bad("training.eval_batch_size", "must be at least 1".into());
        }
        if t.workers == 0 {
            return bad("training.workers", "must be at least 1".into());
        }
        if t.eval_every == 0 {
            return bad("training.eval_every", "must be at least 1".into());
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return bad(
                "training.lr",
                format!("{} is not a positive learning rate", t.lr),
            );
        }
        if !(t.ode_regularization >= 0.0 && t.ode_regularization.is_finite()) {
            return bad(
                "training.ode_regularization",
                format!("{} must be a finite weight >= 0", t.ode_regularization),
            );
        }
        if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
            return bad(
                "training.weight_decay",
                format!("{} must be >= 0", t.weight_decay),
            );
        }
        self.solver
            .validate()
            .map_err(|e| ExperimentError::Config {
                key: "solver".into(),
                message: e.to_string(),
            })?;
        if let Some(adjoint) = &self.adjoint {
            adjoint
                .solver
                .validate()
                .map_err(|e| ExperimentError::Config {
                    key: "adjoint.solver".into(),
                    message: e.to_string(),
                })?;
        }
        self.model
            .egnn
            .validate()
            .map_err(|e| ExperimentError::Config {
                key: "model.egnn".into(),
                message: e.to_string(),
            })?;
        Ok(())
    }

    /// The data file: `data.path` or `<data_dir>/<system file stem>.h5`
    /// ([`System::file_stem`]).
    pub fn data_path(&self, data_dir: &Path) -> PathBuf {
        self.data
            .path
            .clone()
            .unwrap_or_else(|| self.default_data_path(data_dir))
    }

    /// The project's own data file of the run's system in `data_dir`: `<data_dir>/<stem>.h5`.
    fn default_data_path(&self, data_dir: &Path) -> PathBuf {
        data_dir.join(format!("{}.h5", self.data.system.file_stem()))
    }

    /// The run's data set ([`RunConfig::data_path`]). The project's own file
    /// (`<data_dir>/<stem>.h5`) and any missing file go through [`datasets::ensure_dataset`]:
    /// generated with this version's settings on first use, refused when it holds samples drawn
    /// with other settings. Any other existing file is the user's choice and is read as it is
    /// ([`datasets::read_dataset`]: imported samples, or samples drawn with other settings).
    ///
    /// Errors: [`ExperimentError::Data`] naming the file (unreadable, another system, settings
    /// that differ from this version's for the project's own file).
    pub fn load_dataset(
        &self,
        data_dir: &Path,
    ) -> Result<datasets::ParticleDataset, ExperimentError> {
        let path = self.data_path(data_dir);
        let system = self.data.system;
        Ok(
            if path == self.default_data_path(data_dir) || !path.exists() {
                datasets::ensure_dataset(&path, system)?
            } else {
                datasets::read_dataset(&path, system)?
            },
        )
    }
}
