//! Experiments: spec files, the runner, result rows, peers, machine info.

pub mod cli;
pub mod machine;
pub mod mem;
pub mod output;
pub mod peers;
pub mod row;
pub mod runner;
pub mod spec;

pub use output::RunMeta;
pub use row::ResultRow;
pub use runner::{RunOptions, RunReport, run};
pub use spec::Experiment;
