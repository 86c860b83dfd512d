//! Training of the QM9 E-NF (the paper's section 5.3 and the pretrained checkpoint's `args.json`):
//! loss = NLL + 1e-3 x ODE regulariser, Gaussian Hutchinson probes, gradients by
//! backpropagation through the dopri5 steps or by the adjoint method (as the paper; flat memory,
//! so the paper's batch of 128 fits), adaptive gradient clipping of the flow's parameters, AdamW
//! with AMSGrad (lr 2e-4, weight decay 1e-12), ActNorm initialised from the first batch.

use flow::{Noise, TraceEstimator};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::batch::Qm9Batch;
use super::model::Qm9Model;
pub use crate::clip::GradientClipper;
use crate::config::{GradientMethod, TrainingConfig};
use crate::error::ExperimentError;
use crate::optim::AdamW;

/// Settings of QM9 training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qm9TrainOptions {
    /// Learning rate (the checkpoint's args.json: 2e-4).
    pub lr: f64,
    /// Weight of the ODE regulariser (1e-3).
    pub ode_regularization: f64,
    /// Clip gradients adaptively (on, as the reference).
    pub clip_grad: bool,
    /// Backpropagation through the solver (memory grows with batch and NFE: about 1 GB per
    /// molecule for the 6 x 64 model) or the adjoint method (flat memory, a backward solve).
    #[serde(default)]
    pub gradients: GradientMethod,
}

impl Default for Qm9TrainOptions {
    fn default() -> Self {
        Qm9TrainOptions {
            lr: 2e-4,
            ode_regularization: 1e-3,
            clip_grad: true,
            gradients: GradientMethod::Backprop,
        }
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Qm9StepReport {
    /// Mean `-log p(x, h, M)` of the batch, nats per molecule.
    pub nll: f64,
    /// Mean regulariser of the batch.
    pub regulariser: f64,
    /// Gradient norm of the flow's parameters before clipping.
    pub grad_norm: f64,
    /// Whether it was clipped.
    pub clipped: bool,
    /// Function evaluations of the step's solves: the forward solve with backpropagation, the
    /// forward and backward solves together with the adjoint.
    pub nfe: usize,
}

/// The optimiser of the model's trainable parameters with `options`' learning rate.
pub fn qm9_optimizer(model: &Qm9Model, options: &Qm9TrainOptions) -> AdamW {
    AdamW::new(
        &model.vs,
        &TrainingConfig {
            lr: options.lr,
            ..TrainingConfig::default()
        },
    )
}

/// One training step on `batch`: ActNorm initialised from it first if it is not yet, noise and
/// Gaussian Hutchinson probes drawn from libtorch's generator, loss = mean NLL + weight x mean
/// regulariser, gradients by `options.gradients` ([`adjoint_gradients`] for the adjoint), the
/// flow's gradients (ActNorm and dynamics, not the
/// dequantizer's, as the reference) clipped adaptively, AdamW.
///
/// Errors: [`ExperimentError::Flow`] for a failed solve; [`ExperimentError::NonFiniteLoss`] and
/// [`ExperimentError::NonFiniteGradient`] (parameters left unchanged; `epoch` 0, `step` the
/// optimiser's step count).
pub fn qm9_train_step(
    model: &Qm9Model,
    opt: &mut AdamW,
    clipper: &mut GradientClipper,
    batch: &Qm9Batch,
    options: &Qm9TrainOptions,
) -> Result<Qm9StepReport, ExperimentError> {
    let kind = batch.x.kind();
    let flow_err = |source| ExperimentError::Flow {
        context: "QM9 training step".into(),
        source,
    };
    let noise = model
        .dequantizer
        .draw_noise(&batch.masks.node, kind)
        .map_err(flow_err)?;
    if let Some(actnorm) = model.actnorm.as_ref().filter(|a| !a.is_initialized()) {
        let v = tch::no_grad(|| {
            model.dequantizer.forward_with_noise(
                &batch.x,
                &batch.one_hot,
                &batch.charges,
                &batch.masks,
                &noise,
            )
        })
        .map_err(flow_err)?
        .v;
        actnorm
            .initialize(&batch.x, &v, &batch.masks.node)
            .map_err(flow_err)?;
    }
    let s = batch.x.size();
    let probes = TraceEstimator::Hutchinson(Noise::Gaussian).probes(
        &[s[0], s[1], s[2] + super::model::QM9_NODE_NF],
        &batch.masks.node,
        kind,
        batch.x.device(),
    );
    let step = opt.steps_taken() as usize + 1;
    let (nll_v, reg_v, mut grads, nfe) = match options.gradients {
        GradientMethod::Adjoint => {
            let g = adjoint_gradients(
                model,
                batch,
                &noise,
                probes,
                opt.parameters(),
                options.ode_regularization,
            )?;
            let loss = g.nll + options.ode_regularization * g.regulariser;
            if !loss.is_finite() {
                return Err(ExperimentError::NonFiniteLoss {
                    epoch: 0,
                    step,
                    value: loss,
                });
            }
            (g.nll, g.regulariser, g.grads, g.nfe)
        }
        GradientMethod::Backprop => {
            let terms = model.training_terms(batch, &noise, probes)?;
            let nll = -terms.log_p.mean(Kind::Float);
            let reg = terms
                .regulariser
                .as_ref()
                .map_or_else(|| nll.zeros_like(), |r| r.mean(Kind::Float));
            let loss = &nll + &reg * options.ode_regularization;
            if !loss.double_value(&[]).is_finite() {
                return Err(ExperimentError::NonFiniteLoss {
                    epoch: 0,
                    step,
                    value: loss.double_value(&[]),
                });
            }
            let params: Vec<&Tensor> = opt.parameters().iter().collect();
            let raw = Tensor::f_run_backward(&[&loss], &params, false, false)?;
            let grads = raw.into_iter().map(|g| g.defined().then_some(g)).collect();
            let (nll_v, reg_v) = (nll.double_value(&[]), reg.double_value(&[]));
            (nll_v, reg_v, grads, terms.stats.nfe)
        }
    };
    if let Some(parameter) = opt.first_non_finite(&grads) {
        return Err(ExperimentError::NonFiniteGradient {
            epoch: 0,
            step,
            parameter,
        });
    }
    let (mut grad_norm, mut clipped) = (f64::NAN, false);
    if options.clip_grad {
        // The flow's parameters only (ActNorm and dynamics), as the reference clips `flow`.
        let is_flow: Vec<bool> = opt
            .parameter_names()
            .iter()
            .map(|n| !n.starts_with("dequantizer."))
            .collect();
        let mut flow_grads: Vec<Option<Tensor>> = grads
            .iter()
            .zip(&is_flow)
            .map(|(g, &f)| {
                if f {
                    g.as_ref().map(Tensor::shallow_clone)
                } else {
                    None
                }
            })
            .collect();
        let (norm, limit) = clipper.clip(&mut flow_grads);
        grad_norm = norm;
        clipped = norm > limit;
        for ((g, f), &is) in grads.iter_mut().zip(flow_grads).zip(&is_flow) {
            if is {
                *g = f;
            }
        }
    }
    opt.step(&grads)?;
    Ok(Qm9StepReport {
        nll: nll_v,
        regulariser: reg_v,
        grad_norm,
        clipped,
        nfe,
    })
}

/// Gradients of one QM9 training loss by the adjoint method ([`adjoint_gradients`]).
#[derive(Debug)]
pub struct AdjointStep {
    /// Mean `-log p(x, h, M)` of the batch, nats per molecule.
    pub nll: f64,
    /// Mean ODE regulariser of the batch (0 when its weight is 0: then it is not integrated).
    pub regulariser: f64,
    /// Gradients of `nll + ode_regularization x regulariser` for each parameter passed in (zero
    /// for a trainable one the loss does not reach; `None` for a frozen one).
    pub grads: Vec<Option<Tensor>>,
    /// Function evaluations of the forward and backward solves together.
    pub nfe: usize,
}

/// The gradients of the QM9 training loss (mean NLL + `ode_regularization` x mean regulariser)
/// with respect to `params` by the adjoint method (Chen et al. 2018, as the paper trained): the
/// dequantizer and ActNorm run with autograd; the flow is solved without keeping a graph
/// ([`flow::Cnf::log_likelihood_features_adjoint`]), which returns the dynamics' gradients and
/// `dL/dx`, `dL/dh` at the flow's input; these are carried back through ActNorm and the
/// dequantizer by one backward pass of `<x, dL/dx> + <h, dL/dh>` plus the loss's other terms
/// (ActNorm's log-determinant, `log q`, `log p(M)`). Memory is flat in the number of solver
/// steps. Equal to the backpropagated gradients up to the solver tolerances (tested).
///
/// Errors: [`ExperimentError::Flow`] for a failed solve; [`ExperimentError::Torch`] if a
/// backward pass fails.
pub fn adjoint_gradients(
    model: &Qm9Model,
    batch: &Qm9Batch,
    noise: &Tensor,
    probes: flow::Probes,
    params: &[Tensor],
    ode_regularization: f64,
) -> Result<AdjointStep, ExperimentError> {
    let flow_err = |context: &'static str| {
        move |source| ExperimentError::Flow {
            context: format!("QM9 adjoint step: {context}"),
            source,
        }
    };
    let masks = &batch.masks;
    let n = batch.x.size()[0] as f64;
    let regularise = ode_regularization != 0.0;
    let super::model::FlowInputs {
        deq,
        x,
        h,
        log_det_actnorm,
    } = model.flow_inputs(batch, noise)?;
    let out = model
        .flow
        .log_likelihood_features_adjoint(&x, &h, masks, probes, params, regularise, |ll, reg| {
            let nll = -ll.sum(ll.kind());
            match reg {
                Some(r) => (nll + r.sum(r.kind()) * ode_regularization) / n,
                None => nll / n,
            }
        })
        .map_err(flow_err("flow"))?;
    let log_p_m = model
        .node_counts
        .log_prob_of_mask(&masks.node, x.kind())
        .map_err(flow_err("node counts"))?;
    // The loss's terms outside the flow, and the flow's input gradients carried back.
    let outside = -(&log_det_actnorm - &deq.log_q + &log_p_m).sum(x.kind()) / n;
    let mut surrogate = &outside + (&x * &out.grad_x).sum(x.kind());
    if let Some(grad_h) = &out.grad_h {
        surrogate += (&h * grad_h).sum(h.kind());
    }
    // Nothing before the flow may be trainable (no ActNorm, uniform dequantization): then the
    // adjoint's gradients are all there is.
    let carried: Vec<Option<Tensor>> = if surrogate.requires_grad() {
        let inside: Vec<&Tensor> = params.iter().collect();
        Tensor::f_run_backward(&[&surrogate], &inside, false, false)?
            .into_iter()
            .map(|g| g.defined().then_some(g))
            .collect()
    } else {
        params.iter().map(|_| None).collect()
    };
    let grads = out
        .param_grads
        .into_iter()
        .zip(carried)
        .map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        })
        .collect();
    let nll = (-(&out.log_likelihood.detach() + log_det_actnorm.detach() - deq.log_q.detach()
        + log_p_m.detach()))
    .mean(Kind::Double)
    .double_value(&[]);
    let regulariser = out
        .regulariser
        .map_or(0.0, |r| r.mean(Kind::Double).double_value(&[]));
    Ok(AdjointStep {
        nll,
        regulariser,
        grads,
        nfe: out.forward.nfe + out.backward.nfe,
    })
}
