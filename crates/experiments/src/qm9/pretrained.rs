//! Import of the original implementation's pretrained QM9 E-NF (FACTS.md section 5; the authors'
//! `outputs/en_flows_pretrained`, converted to safetensors with the PyTorch parameter names).
//!
//! A checkpoint folder holds `flow.safetensors` (ActNorm + FFJORD/EGNN dynamics), and
//! `dequantizer.safetensors` (the variational dequantizer's EGNN) and `args.json` (the
//! hyper-parameters). The name mapping, reference → this crate (`<l>` a layer index; PyTorch
//! `Linear` weights are `[out, in]`, as here):
//!
//! | reference | here |
//! |---|---|
//! | `transformations.0.{x_log_s, h_t, h_log_s, initialized}` | `actnorm.{x_log_s, h_t, h_log_s, initialized}` |
//! | `transformations.1.int_time`, `inv_int_time` | not parameters (checked to be `[0, 1]`, `[1, 0]`) |
//! | `transformations.1.odefunc.dynamics.egnn.` + E | `dynamics.egnn.` + E' |
//! | `net_fn.egnn.` + E | `dequantizer.egnn.` + E' |
//!
//! with E → E' inside an EGNN:
//!
//! | E | E' |
//! |---|---|
//! | `embedding.{weight,bias}` | `embedding_in.{weight,bias}` |
//! | `embedding_out.{weight,bias}` | `embedding_out.{weight,bias}` |
//! | `gcl_<l>.edge_mlp.0.weight` `[64, 128 + k]` | columns 0..64 → `layers.<l>.edge_mlp.linear_in.source.weight`, 64..128 → `...target.weight`, 128.. (squared distance, then the edge attribute) → `...scalars.weight` |
//! | `gcl_<l>.edge_mlp.0.bias` | `layers.<l>.edge_mlp.linear_in.source.bias` |
//! | `gcl_<l>.edge_mlp.2.*` | `layers.<l>.edge_mlp.linear_out.*` |
//! | `gcl_<l>.att_mlp.0.*` | `layers.<l>.attention.linear.*` |
//! | `gcl_<l>.coord_mlp.0.*` | `layers.<l>.coord_mlp.linear_in.*` |
//! | `gcl_<l>.coord_mlp.2.weight` | `layers.<l>.coord_mlp.linear_out.weight` |
//! | `gcl_<l>.node_mlp.0.*` | `layers.<l>.node_mlp.linear_in.*` (columns h then the aggregated message, as here) |
//! | `gcl_<l>.node_mlp.2.*` | `layers.<l>.node_mlp.linear_out.*` |
//!
//! Every variable of the Rust model must be filled and every tensor of the files used (else a
//! typed error names it), so a silent partial import is impossible.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use egnn::EgnnConfig;
use flow::{DequantizerKind, NodeCountDistribution};
use ode::OdeSolver;
use serde::Deserialize;
use tch::Tensor;

use super::model::{Qm9Model, Qm9ModelConfig};
use crate::checkpoint;
use crate::error::ExperimentError;

/// The fields of the reference's `args.json` that define the model.
#[derive(Debug, Clone, Deserialize)]
pub struct ReferenceArgs {
    /// Dynamics model (`egnn_dynamics`).
    pub model: String,
    /// Number of EGNN layers.
    pub n_layers: i64,
    /// Hidden features.
    pub nf: i64,
    /// Attention gate.
    pub attention: bool,
    /// tanh on the coordinate update.
    pub tanh: bool,
    /// Time as a node feature.
    pub condition_time: bool,
    /// ActNorm in front of the flow.
    pub actnorm: bool,
    /// `uniform`, `variational` or `argmax_variational`.
    pub dequantization: String,
    /// ODE regulariser weight.
    pub ode_regularization: f64,
    /// `hutch` or `exact`.
    pub trace: String,
    /// `sum` or `mean`.
    pub x_aggregation: String,
    /// Context features (must be 0: conditioning is not supported).
    pub context_node_nf: i64,
    /// `qm9`.
    pub dataset: String,
}

impl ReferenceArgs {
    /// Reads `args.json`.
    ///
    /// Errors: [`ExperimentError::Io`], [`ExperimentError::Config`] for unparsable JSON.
    pub fn read(path: &Path) -> Result<Self, ExperimentError> {
        let text = std::fs::read_to_string(path).map_err(|e| ExperimentError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| ExperimentError::Config {
            key: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// The model configuration these arguments describe.
    ///
    /// Errors: [`ExperimentError::Config`] naming an unsupported setting.
    pub fn model_config(&self) -> Result<Qm9ModelConfig, ExperimentError> {
        let bad = |key: &str, value: String| ExperimentError::Config {
            key: format!("args.json {key}"),
            message: format!("{value} is not supported"),
        };
        if self.model != "egnn_dynamics" {
            return Err(bad("model", self.model.clone()));
        }
        if self.context_node_nf != 0 {
            return Err(bad("context_node_nf", self.context_node_nf.to_string()));
        }
        if self.dataset != "qm9" {
            return Err(bad("dataset", self.dataset.clone()));
        }
        // The reference's "mean" divides only the coordinate sum by M - 1 and scales the
        // coordinate range by 19; this crate's mean aggregation differs, so it is refused.
        let aggregation = match self.x_aggregation.as_str() {
            "sum" => egnn::Aggregation::Sum,
            other => return Err(bad("x_aggregation", other.into())),
        };
        let dequantization = match self.dequantization.as_str() {
            "uniform" => DequantizerKind::Uniform,
            "variational" => DequantizerKind::Variational,
            "argmax_variational" => DequantizerKind::ArgmaxVariational,
            other => return Err(bad("dequantization", other.into())),
        };
        if !matches!(self.trace.as_str(), "hutch" | "exact") {
            return Err(bad("trace", self.trace.clone()));
        }
        if !(self.ode_regularization.is_finite() && self.ode_regularization >= 0.0) {
            return Err(bad(
                "ode_regularization",
                self.ode_regularization.to_string(),
            ));
        }
        Ok(Qm9ModelConfig {
            egnn: EgnnConfig {
                hidden_nf: self.nf,
                n_layers: self.n_layers,
                attention: self.attention,
                tanh: self.tanh,
                aggregation,
                condition_time: self.condition_time,
                ..EgnnConfig::default()
            },
            dequantization,
            actnorm: self.actnorm,
            ..Qm9ModelConfig::default()
        })
    }
}

/// Which columns of the reference's first edge layer `[hidden, 2 hidden + k]` a split block takes.
#[derive(Debug, Clone, Copy)]
enum Columns {
    /// The whole tensor.
    All,
    /// Columns `0 .. hidden` (h_i).
    Source,
    /// Columns `hidden .. 2 hidden` (h_j).
    Target,
    /// Columns `2 hidden ..` (squared distance, then edge attributes).
    Scalars,
}

/// Where a variable of an EGNN comes from: `(reference name, columns)`, for the EGNN's variables
/// under `ours` and the reference's under `theirs` (both ending in `.`).
fn egnn_sources(ours: &str, theirs: &str, var: &str) -> Option<(String, Columns)> {
    let rest = var.strip_prefix(ours)?;
    let direct = |s: &str| Some((format!("{theirs}{s}"), Columns::All));
    if let Some(p) = rest.strip_prefix("embedding_in.") {
        return direct(&format!("embedding.{p}"));
    }
    if rest.starts_with("embedding_out.") {
        return direct(rest);
    }
    let rest = rest.strip_prefix("layers.")?;
    let (l, p) = rest.split_once('.')?;
    let gcl = format!("gcl_{l}.");
    let map = |from: &str, to: &str| p.strip_prefix(from).map(|s| format!("{gcl}{to}{s}"));
    if let Some(kind) = p.strip_prefix("edge_mlp.linear_in.") {
        // The reference's first edge layer, split by columns; its bias goes with `source`.
        let weight = format!("{theirs}{gcl}edge_mlp.0.weight");
        return match kind {
            "source.weight" => Some((weight, Columns::Source)),
            "source.bias" => direct(&format!("{gcl}edge_mlp.0.bias")),
            "target.weight" => Some((weight, Columns::Target)),
            "scalars.weight" => Some((weight, Columns::Scalars)),
            _ => None,
        };
    }
    let mapped = map("edge_mlp.linear_out.", "edge_mlp.2.")
        .or_else(|| map("attention.linear.", "att_mlp.0."))
        .or_else(|| map("coord_mlp.linear_in.", "coord_mlp.0."))
        .or_else(|| map("coord_mlp.linear_out.", "coord_mlp.2."))
        .or_else(|| map("node_mlp.linear_in.", "node_mlp.0."))
        .or_else(|| map("node_mlp.linear_out.", "node_mlp.2."))?;
    Some((format!("{theirs}{mapped}"), Columns::All))
}

/// The reference tensor for one of our variables (for a block of the split first edge layer, its
/// columns; `hidden` is the weight's row count).
fn source_of(var: &str, tensors: &HashMap<String, Tensor>) -> Result<(String, Tensor), String> {
    let rules = [
        ("dynamics.egnn.", "transformations.1.odefunc.dynamics.egnn."),
        ("dequantizer.egnn.", "net_fn.egnn."),
    ];
    let found = if let Some(p) = var.strip_prefix("actnorm.") {
        Some((format!("transformations.0.{p}"), Columns::All))
    } else {
        rules
            .iter()
            .find_map(|(ours, theirs)| egnn_sources(ours, theirs, var))
    };
    let (name, columns) = found.ok_or_else(|| format!("no reference name is mapped to {var}"))?;
    let t = tensors
        .get(&name)
        .ok_or_else(|| format!("{name} (for {var}) is not in the checkpoint"))?;
    let size = t.size();
    let hidden = size.first().copied().unwrap_or(0);
    if !matches!(columns, Columns::All) && (size.len() != 2 || size[1] < 2 * hidden + 1) {
        return Err(format!(
            "{name} has shape {size:?}; the first edge layer needs [hidden, 2 hidden + 1 + k]"
        ));
    }
    let t = match columns {
        Columns::All => t.shallow_clone(),
        Columns::Source => t.narrow(1, 0, hidden),
        Columns::Target => t.narrow(1, hidden, hidden),
        Columns::Scalars => t.narrow(1, 2 * hidden, size[1] - 2 * hidden),
    };
    Ok((name, t))
}

/// The files of a pretrained checkpoint folder.
#[derive(Debug, Clone)]
pub struct PretrainedFiles {
    /// `flow.safetensors`.
    pub flow: PathBuf,
    /// `dequantizer.safetensors`.
    pub dequantizer: PathBuf,
    /// `args.json`.
    pub args: PathBuf,
}

impl PretrainedFiles {
    /// The three files in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        PretrainedFiles {
            flow: dir.join("flow.safetensors"),
            dequantizer: dir.join("dequantizer.safetensors"),
            args: dir.join("args.json"),
        }
    }
}

/// Builds the model that `args.json` describes and fills it from the two safetensors files by
/// the module's name mapping; p(M) is `node_counts` (the reference's comes from the training
/// split too), the solver `solver`.
///
/// Errors: [`ExperimentError::Io`] / [`ExperimentError::Checkpoint`] for unreadable files, a
/// missing tensor, a shape mismatch or a tensor left unused (all named);
/// [`ExperimentError::Config`] for unsupported arguments.
pub fn load_pretrained(
    files: &PretrainedFiles,
    node_counts: NodeCountDistribution,
    solver: OdeSolver,
    device: tch::Device,
) -> Result<Qm9Model, ExperimentError> {
    let args = ReferenceArgs::read(&files.args)?;
    let config = args.model_config()?;
    let model = Qm9Model::new(&config, node_counts, solver, device)?;
    let flow = checkpoint::read(&files.flow)?;
    let deq = checkpoint::read(&files.dequantizer)?;
    let mut tensors = flow.tensors;
    for (k, v) in deq.tensors {
        tensors.insert(k, v);
    }
    let err = |message: String| ExperimentError::Checkpoint {
        path: files.flow.parent().unwrap_or(Path::new(".")).to_path_buf(),
        message,
    };
    // The integration interval is a buffer in the reference: check it is the one assumed here.
    for (name, expected) in [
        ("transformations.1.int_time", [0.0, 1.0]),
        ("transformations.1.inv_int_time", [1.0, 0.0]),
    ] {
        let v: Vec<f64> = tensors
            .get(name)
            .ok_or_else(|| err(format!("missing {name}")))?
            .to_kind(tch::Kind::Double)
            .try_into()?;
        if v != expected {
            return Err(err(format!("{name} = {v:?}, expected {expected:?}")));
        }
    }
    let mut used: Vec<String> = vec![
        "transformations.1.int_time".into(),
        "transformations.1.inv_int_time".into(),
    ];
    let mut staged = Vec::new();
    for (name, var) in model.vs.variables() {
        let (source, value) = source_of(&name, &tensors).map_err(err)?;
        if value.size() != var.size() {
            return Err(err(format!(
                "{source} gives {:?} for {name}, which is {:?}",
                value.size(),
                var.size()
            )));
        }
        used.push(source);
        staged.push((var, value));
    }
    if let Some(unused) = tensors.keys().find(|k| !used.contains(k)) {
        return Err(err(format!("{unused} is not used by the Rust model")));
    }
    tch::no_grad(|| {
        for (mut var, value) in staged {
            var.copy_(&value.to_kind(var.kind()).to_device(var.device()));
        }
    });
    if let Some(a) = &model.actnorm {
        if !a.is_initialized() {
            return Err(err(
                "the ActNorm of the checkpoint is not initialised".into()
            ));
        }
    }
    Ok(model)
}
