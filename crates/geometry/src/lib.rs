//! E(n) group actions on batched position tensors, and the equivariance checks every model's tests use.
//!
//! Conventions (shared by the whole workspace): positions are `[batch, nodes, dims]`, node features
//! `[batch, nodes, nf]`, node masks `[batch, nodes]` with 1 for a real node and 0 for padding. Every
//! function here works in the dtype of its input (f32 or f64) and on its device.
//!
//! - [`centre`]: centre-of-mass removal with node masks (the zero-centre-of-mass subspace of E-NF).
//! - [`transform`]: random orthogonal matrices (Haar, reflections included), translations,
//!   permutations, and [`transform::Transform`], one element of E(n) x S_M acting on a batch.
//! - [`pairwise`]: pairwise differences and (squared) distances over the fully connected graph.
//! - [`equivariance`]: check `f(g . input) = g . f(input)` and report the largest deviation.
//! - [`denormals`]: flush denormal floats to zero (FACTS.md 6: 100x slow-downs without it).
//! - [`allocator`]: keep freed tensor memory in the process (glibc `mallopt`; a quarter of long
//!   runs' CPU time went to page faults without it).

pub mod allocator;
pub mod centre;
pub mod denormals;
pub mod equivariance;
pub mod error;
pub mod pairwise;
pub mod testing;
pub mod transform;

pub use allocator::tune_allocator;
pub use centre::{centre, centre_of_mass, node_count};
pub use denormals::flush_denormals;
pub use equivariance::{max_deviation, Covariance, EquivarianceReport, Graphs};
pub use error::GeometryError;
pub use pairwise::{edge_mask, pairwise_differences, pairwise_sq_distances};
pub use transform::{
    random_orthogonal, random_orthogonal_batch, random_permutation, random_rotation_batch,
    random_translation, Transform,
};
