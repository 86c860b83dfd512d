//! AdamW with AMSGrad (Loshchilov & Hutter 2019; Reddi et al. 2018), the paper's optimiser, with
//! its state (step count and moment estimates) readable and writable, so that a training run
//! resumed from a checkpoint continues exactly where it stopped. libtorch's optimisers, as tch
//! exposes them, keep their state out of reach; this one performs the same update as
//! `torch.optim.AdamW` (checked against tch's in the tests).
//!
//! For a parameter `p` with gradient `g` at step `t` (1-based):
//!
//! ```text
//! p <- p (1 - lr wd)
//! m <- beta1 m + (1 - beta1) g,        v <- beta2 v + (1 - beta2) g^2
//! v_max <- max(v_max, v)               (AMSGrad; otherwise v_max = v)
//! p <- p - lr / (1 - beta1^t) * m / (sqrt(v_max) / sqrt(1 - beta2^t) + eps)
//! ```

use crate::config::TrainingConfig;
use crate::error::ExperimentError;
use std::collections::HashMap;
use tch::{nn::VarStore, Tensor};

/// The moment estimates of one parameter (same shape, dtype and device as it).
#[derive(Debug)]
struct Moments {
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor,
}

/// AdamW over the trainable variables of a var store, in name order.
#[derive(Debug)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment (0.9).
    pub beta1: f64,
    /// Decay of the second moment (0.999).
    pub beta2: f64,
    /// Added to the denominator (1e-8).
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Use the running maximum of the second moment (AMSGrad).
    pub amsgrad: bool,
    step: u64,
    names: Vec<String>,
    params: Vec<Tensor>,
    moments: Vec<Moments>,
}

/// Prefix of the optimiser's tensors in a checkpoint.
const PREFIX: &str = "optimiser";

impl AdamW {
    /// The optimiser of `training` (lr, weight decay, AMSGrad; PyTorch's betas 0.9, 0.999 and eps
    /// 1e-8) over the trainable variables of `vs`, state zero.
    pub fn new(vs: &VarStore, training: &TrainingConfig) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, v)| v.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let moments = vars
            .iter()
            .map(|(_, p)| Moments {
                exp_avg: p.zeros_like().detach(),
                exp_avg_sq: p.zeros_like().detach(),
                max_exp_avg_sq: p.zeros_like().detach(),
            })
            .collect();
        let (names, params) = vars.into_iter().unzip();
        AdamW {
            lr: training.lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: training.weight_decay,
            amsgrad: training.amsgrad,
            step: 0,
            names,
            params,
            moments,
        }
    }

    /// The parameters it updates, in the order [`AdamW::step`] expects gradients.
    pub fn parameters(&self) -> &[Tensor] {
        &self.params
    }

    /// The names of [`AdamW::parameters`], in the same order.
    pub fn parameter_names(&self) -> &[String] {
        &self.names
    }

    /// Steps taken so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// The name of the first parameter whose gradient in `grads` (ordered as
    /// [`AdamW::parameters`]) has a NaN or infinite entry.
    pub fn first_non_finite(&self, grads: &[Option<Tensor>]) -> Option<String> {
        self.names
            .iter()
            .zip(grads)
            .find(|(_, g)| {
                g.as_ref()
                    .is_some_and(|g| g.isfinite().all().int64_value(&[]) == 0)
            })
            .map(|(name, _)| name.clone())
    }

    /// One update with `grads[k]` the gradient of `parameters()[k]` (`None`: no gradient, the
    /// parameter and its state are left as they are, as PyTorch does).
    ///
    /// Errors: [`ExperimentError::Model`] when the number or shapes of the gradients do not match
    /// the parameters (nothing is updated then).
    pub fn step(&mut self, grads: &[Option<Tensor>]) -> Result<(), ExperimentError> {
        if grads.len() != self.params.len() {
            return Err(ExperimentError::Model(format!(
                "{} gradients for {} parameters",
                grads.len(),
                self.params.len()
            )));
        }
        for ((name, p), g) in self.names.iter().zip(&self.params).zip(grads) {
            if let Some(g) = g {
                if g.size() != p.size() {
                    return Err(ExperimentError::Model(format!(
                        "gradient of {name}: shape {:?}, parameter {:?}",
                        g.size(),
                        p.size()
                    )));
                }
            }
        }
        self.step += 1;
        let t = self.step as i32;
        let bias1 = 1.0 - self.beta1.powi(t);
        let bias2_sqrt = (1.0 - self.beta2.powi(t)).sqrt();
        let decay = 1.0 - self.lr * self.weight_decay;
        tch::no_grad(|| {
            for ((p, m), g) in self.params.iter_mut().zip(&mut self.moments).zip(grads) {
                let Some(g) = g else { continue };
                let g = g.to_kind(p.kind());
                m.exp_avg = &m.exp_avg * self.beta1 + &g * (1.0 - self.beta1);
                m.exp_avg_sq = &m.exp_avg_sq * self.beta2 + g.square() * (1.0 - self.beta2);
                let second = if self.amsgrad {
                    m.max_exp_avg_sq = m.max_exp_avg_sq.maximum(&m.exp_avg_sq);
                    &m.max_exp_avg_sq
                } else {
                    &m.exp_avg_sq
                };
                let denom = second.sqrt() / bias2_sqrt + self.eps;
                let update = &*p * decay - &m.exp_avg / denom * (self.lr / bias1);
                p.copy_(&update);
            }
        });
        Ok(())
    }

    /// The state as named tensors for a checkpoint: `optimiser.exp_avg.<parameter>`,
    /// `optimiser.exp_avg_sq.<parameter>` and `optimiser.max_exp_avg_sq.<parameter>`; the step
    /// count goes into the checkpoint's metadata ([`AdamW::steps_taken`]).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.names
            .iter()
            .zip(&self.moments)
            .flat_map(|(name, m)| {
                [
                    (
                        format!("{PREFIX}.exp_avg.{name}"),
                        m.exp_avg.shallow_clone(),
                    ),
                    (
                        format!("{PREFIX}.exp_avg_sq.{name}"),
                        m.exp_avg_sq.shallow_clone(),
                    ),
                    (
                        format!("{PREFIX}.max_exp_avg_sq.{name}"),
                        m.max_exp_avg_sq.shallow_clone(),
                    ),
                ]
            })
            .collect()
    }

    /// Restores the state written by [`AdamW::state_tensors`] after `steps` steps.
    ///
    /// Errors: [`ExperimentError::Model`] naming a missing tensor or a shape mismatch; on error
    /// the optimiser is unchanged.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        steps: u64,
    ) -> Result<(), ExperimentError> {
        let mut staged = Vec::with_capacity(self.moments.len());
        for (name, p) in self.names.iter().zip(&self.params) {
            let get = |what: &str| {
                let key = format!("{PREFIX}.{what}.{name}");
                match tensors.get(&key) {
                    Some(t) if t.size() == p.size() => {
                        Ok(t.to_kind(p.kind()).to_device(p.device()).detach())
                    }
                    Some(t) => Err(ExperimentError::Model(format!(
                        "{key}: shape {:?}, parameter {:?}",
                        t.size(),
                        p.size()
                    ))),
                    None => Err(ExperimentError::Model(format!(
                        "missing optimiser state {key}"
                    ))),
                }
            };
            staged.push(Moments {
                exp_avg: get("exp_avg")?,
                exp_avg_sq: get("exp_avg_sq")?,
                max_exp_avg_sq: get("max_exp_avg_sq")?,
            });
        }
        self.moments = staged;
        self.step = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::{self, OptimizerConfig};
    use tch::{Device, Kind};

    fn store(seed: i64) -> VarStore {
        let _rng = geometry::testing::seeded(seed);
        let mut vs = VarStore::new(Device::Cpu);
        let _ = nn::linear(vs.root() / "a", 4, 3, Default::default());
        let _ = nn::linear(vs.root() / "b", 3, 1, Default::default());
        vs.set_kind(Kind::Double);
        vs
    }

    #[test]
    fn same_updates_as_libtorch_adamw_with_amsgrad() {
        let training = TrainingConfig {
            lr: 1e-2,
            weight_decay: 0.1,
            amsgrad: true,
            ..Default::default()
        };
        let (ours_vs, theirs_vs) = (store(1), store(1));
        let mut ours = AdamW::new(&ours_vs, &training);
        let mut theirs = nn::AdamW {
            wd: training.weight_decay,
            amsgrad: true,
            ..Default::default()
        }
        .build(&theirs_vs, training.lr)
        .unwrap();
        let vars = theirs_vs.variables();
        tch::manual_seed(5);
        for _ in 0..6 {
            let grads: Vec<Option<Tensor>> = ours
                .parameters()
                .iter()
                .map(|p| Some(Tensor::randn(p.size(), (Kind::Double, Device::Cpu))))
                .collect();
            theirs.zero_grad();
            // Deposit the same gradients into libtorch's parameters.
            let loss: Vec<Tensor> = ours
                .names
                .iter()
                .zip(&grads)
                .map(|(name, g)| (&vars[name] * g.as_ref().unwrap()).sum(Kind::Double))
                .collect();
            Tensor::stack(&loss, 0).sum(Kind::Double).backward();
            theirs.step();
            ours.step(&grads).unwrap();
        }
        for (name, p) in ours.names.iter().zip(ours.parameters()) {
            let err = (p - &vars[name]).abs().max().double_value(&[]);
            assert!(err < 1e-14, "{name}: {err}");
        }
    }

    #[test]
    fn state_round_trips_and_bad_state_is_an_error() {
        let training = TrainingConfig::default();
        let vs = store(2);
        let mut a = AdamW::new(&vs, &training);
        let grads: Vec<Option<Tensor>> =
            a.parameters().iter().map(|p| Some(p.ones_like())).collect();
        a.step(&grads).unwrap();
        let state: HashMap<String, Tensor> = a.state_tensors().into_iter().collect();
        let mut b = AdamW::new(&store(3), &training);
        b.load_state(&state, a.steps_taken()).unwrap();
        assert_eq!(b.steps_taken(), 1);
        for (x, y) in a.state_tensors().iter().zip(b.state_tensors()) {
            assert_eq!(x.0, y.0);
            assert!(x.1.equal(&y.1));
        }
        let mut missing = state;
        missing.remove("optimiser.exp_avg.a.weight");
        let e = b.load_state(&missing, 9).unwrap_err();
        assert!(e.to_string().contains("optimiser.exp_avg.a.weight"), "{e}");
        assert_eq!(b.steps_taken(), 1);
        assert!(matches!(b.step(&[None]), Err(ExperimentError::Model(_))));
    }
}
