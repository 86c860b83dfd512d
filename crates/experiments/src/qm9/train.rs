//! Training of the QM9 E-NF (the paper's section 5.3 and the pretrained checkpoint's `args.json`):
//! loss = NLL + 1e-3 x ODE regulariser, Gaussian Hutchinson probes, gradients by
//! backpropagation through the dopri5 steps, adaptive gradient clipping of the flow's
//! parameters, AdamW with AMSGrad (lr 2e-4, weight decay 1e-12), ActNorm initialised from the
//! first batch.

use std::collections::VecDeque;

use flow::{Noise, TraceEstimator};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::batch::Qm9Batch;
use super::model::Qm9Model;
use crate::config::TrainingConfig;
use crate::error::ExperimentError;
use crate::optim::AdamW;

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

/// Settings of QM9 training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qm9TrainOptions {
    /// Learning rate (the checkpoint's args.json: 2e-4).
    pub lr: f64,
    /// Weight of the ODE regulariser (1e-3).
    pub ode_regularization: f64,
    /// Clip gradients adaptively (on, as the reference).
    pub clip_grad: bool,
}

impl Default for Qm9TrainOptions {
    fn default() -> Self {
        Qm9TrainOptions {
            lr: 2e-4,
            ode_regularization: 1e-3,
            clip_grad: true,
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
    /// Function evaluations of the forward solve.
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
/// regulariser, gradients by backpropagation, the flow's gradients (ActNorm and dynamics, not the
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
    let terms = model.training_terms(batch, &noise, probes)?;
    let nll = -terms.log_p.mean(Kind::Float);
    let reg = terms
        .regulariser
        .as_ref()
        .map_or_else(|| nll.zeros_like(), |r| r.mean(Kind::Float));
    let loss = &nll + &reg * options.ode_regularization;
    let (nll_v, reg_v) = (nll.double_value(&[]), reg.double_value(&[]));
    let step = opt.steps_taken() as usize + 1;
    if !loss.double_value(&[]).is_finite() {
        return Err(ExperimentError::NonFiniteLoss {
            epoch: 0,
            step,
            value: loss.double_value(&[]),
        });
    }
    let params: Vec<&Tensor> = opt.parameters().iter().collect();
    let raw = Tensor::f_run_backward(&[&loss], &params, false, false)?;
    let mut grads: Vec<Option<Tensor>> =
        raw.into_iter().map(|g| g.defined().then_some(g)).collect();
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
        nfe: terms.stats.nfe,
    })
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
