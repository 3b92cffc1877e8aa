//! The host's tools: what is installed, the container engine, labels, removal (the only place
//! that removes), kind/kubectl, readiness probes, preflight checks.
// Workers never print straight to the terminal: output goes through exec::progress or is
// returned to the command.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod disk;
pub mod dns;
pub mod dockerd;
pub mod engine;
pub mod facts;
pub mod kube;
pub mod packages;
pub mod preflight;
pub mod ready;
pub mod removal;
pub mod settings;
pub mod shared;
pub mod smoke;
pub mod tools;
