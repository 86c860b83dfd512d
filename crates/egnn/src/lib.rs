//! E(n) equivariant graph neural networks (Satorras, Hoogeboom & Welling 2021) as the dynamics of
//! continuous normalizing flows (Satorras et al., "E(n) Equivariant Normalizing Flows", 2021).
//!
//! Everything is batched and dense over the fully connected graph: positions `[batch, nodes, dims]`,
//! features `[batch, nodes, nf]`, messages `[batch, nodes, nodes - 1, hidden_nf]` (each node's
//! neighbours, see [`Masks`]; inside a convolution flattened to `[batch * nodes * (nodes - 1),
//! hidden_nf]`, see [`conv`]), with node and edge masks
//! for padded batches. Parameters live in a tch `VarStore` under the path the caller gives.
//!
//! - [`linear`]: fully connected layers initialised as PyTorch initialises `nn.Linear`.
//! - [`conv`]: one E(n) equivariant graph convolution with the stabilised coordinate update (eq. 9).
//! - [`network`]: the stack of convolutions with feature embeddings in and out ([`Egnn`]).
//! - [`dynamics`]: the [`Dynamics`] trait (a velocity field over graphs) and [`EgnnDynamics`], the
//!   E-NF dynamics that output a centred velocity.
//! - The baselines of the paper's Table 1, each a [`Dynamics`] the same flow can use:
//!   [`gnn`] ([`GnnDynamics`]: GNF, GNF-att, GNF-att-aug; permutation but not E(n) equivariant),
//!   [`simple`] ([`SimpleDynamics`]: gradient of a learned pair potential) and [`kernel`]
//!   ([`KernelDynamics`]: RBF kernels in distance and time). The last two have closed-form
//!   divergences.

pub mod config;
pub mod conv;
pub mod dynamics;
pub mod error;
pub mod gnn;
pub mod kernel;
pub mod linear;
pub mod masks;
pub mod network;
pub mod simple;
pub mod testing;

pub use config::{Aggregation, EgnnConfig};
pub use conv::{EquivariantConv, Tangents};
pub use dynamics::{Dynamics, EgnnDynamics, Velocity};
pub use error::EgnnError;
pub use gnn::{GnnDynamics, GraphConv};
pub use kernel::{KernelConfig, KernelDynamics};
pub use masks::Masks;
pub use network::{Egnn, JvpOutput};
pub use simple::{SimpleConfig, SimpleDynamics};
