//! Execution: the only layer that starts processes, and what runs a plan (the task graph,
//! signals, progress, run records, reports, the run lifecycle, cluster slots).

pub mod builds;
pub mod dag;
pub mod lifecycle;
pub mod process;
pub mod progress;
pub mod record;
pub mod report;
pub mod signals;
pub mod slots;
