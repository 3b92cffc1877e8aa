//! Planning: pure functions from `infra.toml` and a run's facts to what the run will do.
//! Nothing here starts a process or touches the engine.

pub mod facts;
pub mod render;
pub mod stack;
