//! Planning: pure functions from `infra.toml` and a run's facts to what the run will do.
//! Nothing here starts a process or touches the engine.
// Workers never print straight to the terminal: output goes through exec::progress or is
// returned to the command.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod facts;
pub mod render;
pub mod stack;
