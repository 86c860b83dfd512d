//! The QM9 E-NF (E-NF paper, section 5.3; FACTS.md sections 1 and 2): dequantizer, ActNorm,
//! the continuous flow over positions and features with EGNN dynamics, and the node-count
//! distribution, composed into `log p(x, h, M)`. The same model with GNF dynamics
//! ([`egnn::GnnDynamics::with_features`]) is the paper's QM9 baselines (Table 2: GNF-attention,
//! GNF-attention-augmentation).
//!
//! `log p(x, h, M) >= log p_Z(z_x) + log N(z_h) + log|det ActNorm| + integral of the trace
//! - log q(v | x, h) + log p(M)` with `v` the dequantized features (FACTS.md section 1).

use egnn::{EgnnConfig, EgnnDynamics, GnnDynamics, Masks};
use flow::dequantize::dequantizer_egnn_config;
use flow::{
    ActNorm, CentredGaussian, Cnf, Dequantizer, DequantizerKind, GradientMode,
    NodeCountDistribution, Probes, StandardGaussian, TraceEstimator,
};
use ode::{OdeSolver, SolveStats};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use super::batch::Qm9Batch;
use crate::config::FlowMethod;
use crate::error::ExperimentError;
use crate::model::FlowDynamics;
pub use datasets::qm9::Molecule;

/// Number of atom types (H, C, N, O, F): the one-hot part of the features.
pub const N_ATOM_TYPES: i64 = 5;
/// Number of integer features (the atomic number).
pub const N_INTEGER_FEATURES: i64 = 1;
/// Features per atom: one-hot type + atomic number.
pub const QM9_NODE_NF: i64 = N_ATOM_TYPES + N_INTEGER_FEATURES;

/// What the flow of a [`Qm9Model`] takes in ([`Qm9Model::flow_inputs`]).
#[derive(Debug)]
pub struct FlowInputs {
    /// The dequantized features `v` `[batch, nodes, 6]` and `log q` `[batch]`.
    pub deq: flow::dequantize::Dequantized,
    /// Positions after ActNorm `[batch, nodes, 3]`.
    pub x: Tensor,
    /// Features after ActNorm `[batch, nodes, 6]`.
    pub h: Tensor,
    /// ActNorm's log-determinant `[batch]` (0 without ActNorm).
    pub log_det_actnorm: Tensor,
}

/// Hyper-parameters of the QM9 E-NF. Defaults are the paper's (and the pretrained checkpoint's
/// `args.json`): 6 layers of 64 with attention and tanh, ActNorm, argmax + variational
/// dequantization with a 4-layer EGNN. (The trace estimator is chosen per evaluation.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Qm9ModelConfig {
    /// The flow's dynamics: [`FlowMethod::Enf`] (EGNN, the default) or one of the GNF methods
    /// ([`FlowMethod::Gnf`], [`FlowMethod::GnfAtt`], [`FlowMethod::GnfAttAug`]: a GNN over
    /// `[t, x, h]`, attention as the method says; -aug's rotations are the trainer's). Simple and
    /// kernel dynamics move positions only and are refused.
    pub method: FlowMethod,
    /// The dynamics' network (hidden_nf, n_layers, attention, tanh, ... for the EGNN; hidden_nf,
    /// n_layers and condition_time for a GNN).
    pub egnn: EgnnConfig,
    /// The dequantization scheme.
    pub dequantization: DequantizerKind,
    /// The variational dequantizer's EGNN.
    pub dequantizer_egnn: EgnnConfig,
    /// Whether an ActNorm precedes the flow.
    pub actnorm: bool,
}

impl Qm9ModelConfig {
    /// Checks that [`Qm9ModelConfig::method`] can move atom types as well as positions: E-NF or
    /// a GNF method.
    ///
    /// Errors: [`ExperimentError::Config`] (key `model.method`) for simple and kernel dynamics.
    pub fn check_method(&self) -> Result<(), ExperimentError> {
        match self.method {
            FlowMethod::Enf | FlowMethod::Gnf | FlowMethod::GnfAtt | FlowMethod::GnfAttAug => {
                Ok(())
            }
            m @ (FlowMethod::SimpleDynamics | FlowMethod::KernelDynamics) => {
                Err(Self::positions_only_method(m))
            }
        }
    }

    fn positions_only_method(method: FlowMethod) -> ExperimentError {
        ExperimentError::Config {
            key: "model.method".into(),
            message: format!(
                "{} moves positions only; a QM9 flow over positions and atom types needs enf, \
                 gnf, gnf_att or gnf_att_aug",
                method.name()
            ),
        }
    }
}

impl Default for Qm9ModelConfig {
    fn default() -> Self {
        Qm9ModelConfig {
            method: FlowMethod::Enf,
            egnn: EgnnConfig {
                hidden_nf: 64,
                n_layers: 6,
                ..EgnnConfig::default()
            },
            dequantization: DequantizerKind::ArgmaxVariational,
            dequantizer_egnn: dequantizer_egnn_config(),
            actnorm: true,
        }
    }
}

/// The terms of `log p(x, h, M)` for a batch, each `[batch]` in nats.
#[derive(Debug)]
pub struct Qm9LogLikelihood {
    /// The variational lower bound on `log p(x, h, M)` (what the paper reports, negated, as NLL).
    pub log_p: Tensor,
    /// `log p_Z(z_x) + log N(z_h; 0, I)`.
    pub log_pz: Tensor,
    /// `log |det|` of the flow: ActNorm plus the integral of the trace.
    pub log_det: Tensor,
    /// `log q(v | x, h)` of the dequantizer.
    pub log_q: Tensor,
    /// `log p(M)`.
    pub log_p_m: Tensor,
    /// The ODE regulariser `[batch]` when computed ([`Qm9Model::training_terms`]).
    pub regulariser: Option<Tensor>,
    /// Solver statistics of the density solve.
    pub stats: SolveStats,
}

/// The QM9 E-NF (or a GNF baseline). Parameters in `vs` under `dequantizer.egnn.*`, `actnorm.*`,
/// `dynamics.egnn.*` (E-NF) or `dynamics.gnn.*` (GNF methods).
pub struct Qm9Model {
    /// The parameters.
    pub vs: nn::VarStore,
    /// The dequantizer.
    pub dequantizer: Dequantizer,
    /// The ActNorm, if configured.
    pub actnorm: Option<ActNorm>,
    /// The flow over `[x, h]`.
    pub flow: Cnf<FlowDynamics>,
    /// p(M).
    pub node_counts: NodeCountDistribution,
    /// The configuration it was built from.
    pub config: Qm9ModelConfig,
}

impl std::fmt::Debug for Qm9Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qm9Model")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Qm9Model {
    /// Builds the model (parameters from libtorch's generator; ActNorm uninitialised) with
    /// `node_counts` = p(M) and the ODE solver `solver`, on `device`.
    ///
    /// Errors: [`ExperimentError::Model`] for invalid hyper-parameters;
    /// [`ExperimentError::Config`] for a method that moves positions only
    /// ([`Qm9ModelConfig::check_method`]).
    pub fn new(
        config: &Qm9ModelConfig,
        node_counts: NodeCountDistribution,
        solver: OdeSolver,
        device: tch::Device,
    ) -> Result<Self, ExperimentError> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let model_err = |e: String| ExperimentError::Model(e);
        let dequantizer = Dequantizer::new(
            &(&root / "dequantizer"),
            config.dequantization,
            N_ATOM_TYPES,
            N_INTEGER_FEATURES,
            &config.dequantizer_egnn,
        )
        .map_err(|e| model_err(e.to_string()))?;
        let actnorm = config
            .actnorm
            .then(|| ActNorm::new(&(&root / "actnorm"), QM9_NODE_NF));
        let path = &root / "dynamics";
        let gnn = |attention: bool| {
            let egnn = EgnnConfig {
                attention,
                ..config.egnn.clone()
            };
            GnnDynamics::with_features(path.clone(), &egnn, 3, QM9_NODE_NF).map(FlowDynamics::Gnn)
        };
        let dynamics = match config.method {
            FlowMethod::Enf => {
                EgnnDynamics::new(path.clone(), &config.egnn, QM9_NODE_NF).map(FlowDynamics::Enf)
            }
            FlowMethod::Gnf => gnn(false),
            FlowMethod::GnfAtt | FlowMethod::GnfAttAug => gnn(true),
            m @ (FlowMethod::SimpleDynamics | FlowMethod::KernelDynamics) => {
                return Err(Qm9ModelConfig::positions_only_method(m))
            }
        }
        .map_err(|e| model_err(e.to_string()))?;
        Ok(Qm9Model {
            vs,
            dequantizer,
            actnorm,
            flow: Cnf::new(dynamics, solver),
            node_counts,
            config: config.clone(),
        })
    }

    /// Number of scalar parameters (trainable and not).
    pub fn n_parameters(&self) -> i64 {
        self.vs.variables().values().map(|t| t.numel() as i64).sum()
    }

    /// The terms of `log p(x, h, M)` for a batch: dequantize, ActNorm, encode with `trace`'s
    /// probes, prior, node-count term; the dequantization noise and the probes (over the joint
    /// state `[x, h]`) are drawn here from libtorch's generator. Gradients flow when `mode` is
    /// [`GradientMode::Backprop`].
    ///
    /// Errors: [`ExperimentError::Flow`] for shape errors and failed solves (context names the
    /// step).
    pub fn log_likelihood(
        &self,
        batch: &Qm9Batch,
        trace: TraceEstimator,
        mode: GradientMode,
    ) -> Result<Qm9LogLikelihood, ExperimentError> {
        let kind = batch.x.kind();
        let s = batch.x.size();
        if s.len() != 3 {
            return Err(ExperimentError::Model(format!(
                "QM9 positions must be [batch, atoms, 3], got {s:?}"
            )));
        }
        let noise = self
            .dequantizer
            .draw_noise(&batch.masks.node, kind)
            .map_err(|source| ExperimentError::Flow {
                context: "dequantizer".into(),
                source,
            })?;
        let probes = trace.probes(
            &[s[0], s[1], s[2] + QM9_NODE_NF],
            &batch.masks.node,
            kind,
            batch.x.device(),
        );
        self.log_likelihood_with(batch, &noise, probes, mode)
    }

    /// [`Qm9Model::log_likelihood`] with given dequantization noise `[batch, nodes, 6]`
    /// ([`Dequantizer::draw_noise`]) and trace probes (over `[batch, nodes, 3 + 6]`): a
    /// deterministic function of its inputs.
    ///
    /// Errors: as [`Qm9Model::log_likelihood`].
    pub fn log_likelihood_with(
        &self,
        batch: &Qm9Batch,
        noise: &Tensor,
        probes: Probes,
        mode: GradientMode,
    ) -> Result<Qm9LogLikelihood, ExperimentError> {
        self.terms(batch, noise, probes, mode, false)
    }

    /// What a training step needs: [`Qm9Model::log_likelihood_with`] with gradients
    /// (backpropagation through the solver) and the ODE regulariser
    /// ([`flow::Cnf::encode_features_regularised`]) in [`Qm9LogLikelihood::regulariser`].
    ///
    /// Errors: as [`Qm9Model::log_likelihood`].
    pub fn training_terms(
        &self,
        batch: &Qm9Batch,
        noise: &Tensor,
        probes: Probes,
    ) -> Result<Qm9LogLikelihood, ExperimentError> {
        self.terms(batch, noise, probes, GradientMode::Backprop, true)
    }

    /// The flow's input for `batch` with dequantization `noise` (`[batch, nodes, 6]`): the
    /// dequantizer's continuous features and `log q`, then ActNorm (when the model has one)
    /// applied to the positions and those features, with its log-determinant `[batch]`.
    /// Gradients flow as the caller's grad mode says.
    ///
    /// Errors: [`ExperimentError::Flow`] naming the dequantizer or ActNorm (shapes, an
    /// uninitialised ActNorm).
    pub fn flow_inputs(
        &self,
        batch: &Qm9Batch,
        noise: &Tensor,
    ) -> Result<FlowInputs, ExperimentError> {
        let flow_err = |context: &str| {
            let context = context.to_string();
            move |source| ExperimentError::Flow { context, source }
        };
        let masks = &batch.masks;
        let deq = self
            .dequantizer
            .forward_with_noise(&batch.x, &batch.one_hot, &batch.charges, masks, noise)
            .map_err(flow_err("dequantizer"))?;
        let (x, h, log_det_actnorm) = match &self.actnorm {
            Some(a) => a
                .forward(&batch.x, &deq.v, &masks.node)
                .map_err(flow_err("actnorm"))?,
            None => (
                batch.x.shallow_clone(),
                deq.v.shallow_clone(),
                Tensor::zeros([batch.x.size()[0]], (batch.x.kind(), batch.x.device())),
            ),
        };
        Ok(FlowInputs {
            deq,
            x,
            h,
            log_det_actnorm,
        })
    }

    fn terms(
        &self,
        batch: &Qm9Batch,
        noise: &Tensor,
        probes: Probes,
        mode: GradientMode,
        regularise: bool,
    ) -> Result<Qm9LogLikelihood, ExperimentError> {
        let flow_err = |context: &str| {
            let context = context.to_string();
            move |source| ExperimentError::Flow { context, source }
        };
        let compute = move || {
            let masks = &batch.masks;
            let FlowInputs {
                deq,
                x,
                h,
                log_det_actnorm,
            } = self.flow_inputs(batch, noise)?;
            let enc = if regularise {
                self.flow
                    .encode_features_regularised(&x, &h, masks, probes, mode)
            } else {
                self.flow.encode_features(&x, &h, masks, probes, mode)
            }
            .map_err(flow_err("flow"))?;
            let log_pz = self
                .flow
                .log_prior(&enc, masks)
                .map_err(flow_err("prior"))?;
            let log_det = enc.log_det + log_det_actnorm;
            let log_p_m = self
                .node_counts
                .log_prob_of_mask(&masks.node, x.kind())
                .map_err(flow_err("node counts"))?;
            let log_p = &log_pz + &log_det - &deq.log_q + &log_p_m;
            Ok(Qm9LogLikelihood {
                log_p,
                log_pz,
                log_det,
                log_q: deq.log_q,
                log_p_m,
                regulariser: enc.regulariser,
                stats: enc.stats,
            })
        };
        match mode {
            GradientMode::Backprop => compute(),
            GradientMode::NoGrad => tch::no_grad(compute),
        }
    }

    /// Samples molecules with the given atom counts: `z_x` from the centred Gaussian, `z_h`
    /// standard normal, decoded from t = 1 to 0, ActNorm reversed, features quantized (atom
    /// type = argmax of the one-hot part). Uses libtorch's generator. Padded atoms are dropped.
    ///
    /// Errors: [`ExperimentError::Flow`] for a failed solve; [`ExperimentError::Model`] for an
    /// empty list or a zero atom count.
    pub fn sample(
        &self,
        n_atoms: &[usize],
        kind: Kind,
    ) -> Result<(Vec<Molecule>, SolveStats), ExperimentError> {
        if n_atoms.is_empty() || n_atoms.contains(&0) {
            return Err(ExperimentError::Model(format!(
                "cannot sample molecules with atom counts {n_atoms:?}"
            )));
        }
        let device = self.vs.device();
        let m_max = *n_atoms.iter().max().unwrap_or(&1) as i64;
        let mask_rows: Vec<f32> = n_atoms
            .iter()
            .flat_map(|&m| (0..m_max).map(move |a| if (a as usize) < m { 1.0 } else { 0.0 }))
            .collect();
        let node_mask = Tensor::from_slice(&mask_rows)
            .view([n_atoms.len() as i64, m_max])
            .to_kind(kind)
            .to_device(device);
        let masks = Masks::from_node_mask(&node_mask);
        let flow_err = |context: &'static str| {
            move |source| ExperimentError::Flow {
                context: context.into(),
                source,
            }
        };
        tch::no_grad(|| {
            let z_x = CentredGaussian
                .sample(&node_mask, 3, kind, device)
                .map_err(flow_err("prior"))?;
            let z_h = StandardGaussian.sample(&node_mask, QM9_NODE_NF, kind, device);
            let (x, h, stats) = self
                .flow
                .decode_features(&z_x, &z_h, &masks, GradientMode::NoGrad)
                .map_err(flow_err("flow"))?;
            let (x, v) = match &self.actnorm {
                Some(a) => a.reverse(&x, &h, &node_mask).map_err(flow_err("actnorm"))?,
                None => (x, h),
            };
            let (one_hot, _) = self
                .dequantizer
                .reverse(&v, &node_mask)
                .map_err(flow_err("dequantizer"))?;
            let types: Vec<i64> = one_hot
                .argmax(-1, false)
                .flatten(0, -1)
                .to_device(tch::Device::Cpu)
                .try_into()?;
            let xs: Vec<f32> = x
                .to_kind(Kind::Float)
                .flatten(0, -1)
                .to_device(tch::Device::Cpu)
                .try_into()?;
            let molecules = n_atoms
                .iter()
                .enumerate()
                .map(|(b, &m)| {
                    let row = b * m_max as usize;
                    Molecule {
                        atomic_numbers: (0..m)
                            .map(|a| {
                                datasets::Element::ALL[types[row + a].clamp(0, 4) as usize]
                                    .atomic_number()
                            })
                            .collect(),
                        positions: xs[row * 3..(row + m) * 3].to_vec(),
                    }
                })
                .collect();
            Ok((molecules, stats))
        })
    }
}

/// p(M) of the QM9 E-NF: the histogram of atom counts over the training split of `ds`.
///
/// Errors: [`ExperimentError::Flow`] when the split is empty; [`ExperimentError::Data`] when
/// it names a row beyond the data set.
pub fn training_node_counts(
    ds: &datasets::qm9::Qm9Dataset,
) -> Result<NodeCountDistribution, ExperimentError> {
    let hist = ds.atom_count_histogram(ds.splits.train.iter().copied())?;
    NodeCountDistribution::from_histogram(&hist).map_err(|e| ExperimentError::Flow {
        context: "node-count distribution".into(),
        source: e,
    })
}
