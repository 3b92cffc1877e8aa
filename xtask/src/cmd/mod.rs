//! One module per command: each parses nothing (flags/ does), plans through `plan`, acts
//! through `exec` and `host`, and reports.

pub mod bench;
pub mod check;
pub mod clean;
pub mod clean_images;
pub mod cluster;
pub mod doctor;
pub mod e2e;
pub mod integration;
pub mod ports;
pub mod setup;
pub mod tag;
pub mod test;
