//! QM9 with the E-NF (the paper's section 5.3, Tables 2 and 3): batches of padded molecules, the
//! model over positions and atom types, import of the authors' pretrained checkpoint, training
//! with the reference's best-validation protocol, likelihood evaluation and sampling with
//! stability.

pub mod batch;
pub mod evaluate;
pub mod journal;
pub mod model;
pub mod pretrained;
pub mod protocol;
pub mod render;
pub mod run;
pub mod table2;
pub mod train;

pub use batch::Qm9Batch;
pub use evaluate::{
    batch_seed, evaluate_nll, sample_molecules, seeded_subset, NllEvaluation, SampleEvaluation,
};
pub use journal::{EvaluationJournal, JournalHeader};
pub use model::{Qm9LogLikelihood, Qm9Model, Qm9ModelConfig};
pub use pretrained::{load_pretrained, PretrainedFiles, ReferenceArgs};
pub use protocol::{train_with_validation, ValidatedRun, ValidatedRunConfig, ValidationLine};
pub use table2::{
    reproduce_table2, BaselineProtocol, BaselineResult, Table2, Table2Options, Table2Profile,
};
