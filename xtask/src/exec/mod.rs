//! Execution: the only layer that starts processes, and what runs a plan (the task graph,
//! signals, progress, run records, reports, the run lifecycle, cluster slots).
// Workers never print straight to the terminal: output goes through exec::progress or is
// returned to the command.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod actions;
pub mod archive;
pub mod builds;
pub mod cache;
pub mod clusters;
pub mod dag;
pub mod lifecycle;
pub mod process;
pub mod progress;
pub mod quick;
pub mod record;
pub mod report;
pub mod signals;
pub mod slots;
pub mod snapshot;
pub mod steps;
