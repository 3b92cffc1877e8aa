//! What a run asks of the container engine, as data: a container to start and an image to
//! build. Planners produce these; `host::engine` turns them into argv for podman or docker.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// What `podman run -d` needs for one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    pub name: String,
    pub image: String,
    pub network: String,
    pub labels: BTreeMap<String, String>,
    pub env: BTreeMap<String, String>,
    /// (host port, container port), published on all addresses.
    pub publish: Vec<(u16, u16)>,
    /// Replaces the image's entrypoint when not empty (its first word is the entrypoint, the
    /// rest come before `args`).
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// (absolute host path, container path), read-only.
    pub mounts: Vec<(PathBuf, String)>,
}

/// What `podman build` needs for one image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildSpec {
    pub reference: String,
    /// More names for the same image (the run's own reference next to a cache reference).
    pub tags: Vec<String>,
    pub dockerfile: PathBuf,
    pub context: PathBuf,
    pub labels: BTreeMap<String, String>,
    pub build_args: BTreeMap<String, String>,
}

/// A host port a run will publish or its tests will bind, and whose it is (for "port taken"
/// messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub port: u16,
    pub what: String,
}
