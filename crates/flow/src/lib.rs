//! Continuous normalizing flows over graphs (Chen et al. 2018; Grathwohl et al. 2019, "FFJORD"),
//! as E-NF uses them (Satorras et al., "E(n) Equivariant Normalizing Flows", 2021, section 4).
//!
//! A flow integrates `d[x, log det]/dt = [v(t, x), tr(dv/dx)]` from t = 0 (data) to t = 1 (latent)
//! with the ode crate; `log p(x) = log p_Z(z) + integral of the trace` (instantaneous change of
//! variables). Sampling integrates the velocity alone from t = 1 back to 0.
//!
//! - [`prior`]: the centre-of-mass-free Gaussian over positions ((M - 1) * n degrees of freedom) and
//!   the standard Gaussian over features.
//! - [`trace`]: the divergence of the dynamics, exact or by Hutchinson's estimator.
//! - [`cnf`]: [`Cnf`], the flow: encode, log-likelihood, decode, sample (positions, or positions
//!   and features).
//! - [`dequantize`]: uniform, variational and argmax dequantization of discrete node features.
//! - [`actnorm`]: data-initialised scaling of positions and features (QM9).
//! - [`node_count`]: the distribution p(M) of the number of nodes.

pub mod actnorm;
pub mod cnf;
pub mod dequantize;
pub mod error;
pub mod node_count;
pub mod prior;
pub mod trace;

pub use actnorm::ActNorm;
pub use cnf::{AdjointLikelihood, Cnf, Encoded, GradientMode};
pub use dequantize::{Dequantized, Dequantizer, DequantizerKind};
pub use error::FlowError;
pub use node_count::NodeCountDistribution;
pub use prior::{CentredGaussian, StandardGaussian};
pub use trace::{Noise, Probes, TraceEstimator};
