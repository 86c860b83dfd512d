//! The paper's experiments: configurations, the E-NF model built from them, training with the
//! paper's protocol, evaluation, checkpoints, results and tables. The `enf` binary is the command
//! line over this library; `cargo xtask reproduce-table1` (and `-table2`, `-table3`) run it.

pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod data;
pub mod error;
pub mod evaluate;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod qm9;
pub mod results;
pub mod run_lock;
pub mod table1;
pub mod table3;
pub mod train;

pub use config::{RunConfig, System};
pub use error::ExperimentError;
pub use model::EnfModel;
pub use results::RunResult;
