//! From a packed rootfs to an image, with podman or docker: `import --change ...` (what each
//! engine's import accepts), image ids, and removing the image a `--force` build replaced.
//!
//! The import changes the engine's state, so it is uninterruptible like every such command
//! (ARCHITECTURE.md): never signalled, output to files, and therefore without a time limit.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::recipes::{Recipe, DESCRIPTION};
use crate::exec::process::{Cmd, Uninterruptible};
use crate::exec::progress::{Line, Progress};
use crate::host::tools::Engine;

/// The instructions `docker import --change` accepts. Measured against dockerd 20.10.24 (the
/// daemon checks the list of commit commands); `STOPSIGNAL`, `SHELL`, `ARG` and `MAINTAINER`
/// are refused there with "... is not a valid change command".
pub const DOCKER_IMPORT_CHANGES: [&str; 10] = [
    "CMD",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "HEALTHCHECK",
    "LABEL",
    "ONBUILD",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// The engine an image is imported into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Importer {
    /// `podman import` takes every instruction of an image config.
    Podman,
    Docker,
}

impl Importer {
    pub fn of(engine: &Engine) -> Importer {
        if engine.is_podman() {
            Importer::Podman
        } else {
            Importer::Docker
        }
    }

    /// Whether this engine's import takes the `--change` instruction `change`.
    ///
    /// The one instruction of our recipes docker refuses is the PostgreSQL stand-in's
    /// `STOPSIGNAL SIGINT`; it is left out for docker rather than added by a `docker build`
    /// step on top of the import (a build, and with the legacy builder an intermediate image
    /// carrying our labels). Without it docker stops the container with SIGTERM, which
    /// PostgreSQL takes as a smart shutdown: it waits for clients to disconnect, so a `docker
    /// stop` of a server with open connections takes the stop timeout. Runs never wait on
    /// that: they remove containers with `rm --force`.
    pub fn accepts(self, change: &str) -> bool {
        match self {
            Importer::Podman => true,
            Importer::Docker => {
                let keyword = change.split_whitespace().next().unwrap_or_default();
                DOCKER_IMPORT_CHANGES.contains(&keyword.to_ascii_uppercase().as_str())
            }
        }
    }
}

/// The `--change` instructions of `r` that `importer` takes, and those it does not.
pub fn changes(
    importer: Importer,
    r: &Recipe,
    owner: &str,
    created: u64,
) -> (Vec<String>, Vec<String>) {
    r.changes(owner, created)
        .into_iter()
        .partition(|c| importer.accepts(c))
}

/// `<engine> import --change ... --message ... TAR REFERENCE`.
pub fn import_cmd(
    engine: &Engine,
    changes: &[String],
    tar: &Path,
    reference: &str,
) -> Cmd<Uninterruptible> {
    let mut c = engine.cmd().arg("import");
    for change in changes {
        c = c.arg("--change").arg(change);
    }
    c.arg("--message")
        .arg(DESCRIPTION)
        .arg(tar)
        .arg(reference)
        .uninterruptible()
}

/// What one import needs.
pub struct Import<'a> {
    pub engine: &'a Engine,
    pub recipe: &'a Recipe,
    pub owner: &'a str,
    pub created: u64,
}

impl Import<'_> {
    /// Imports `tar` as the recipe's image; the line shows the engine's output.
    pub fn run(&self, tar: &Path, line: &Arc<Line>) -> Result<()> {
        let importer = Importer::of(self.engine);
        let (take, leave) = changes(importer, self.recipe, self.owner, self.created);
        let reference = self.recipe.reference;
        let note = if leave.is_empty() {
            String::new()
        } else {
            // A state, not a detail: plain progress (CI logs) shows it too.
            format!(
                " ({} import takes no {})",
                self.engine.name(),
                leave.join(", ")
            )
        };
        line.state("importing", &format!("{reference}{note}"));
        let l = Arc::clone(line);
        import_cmd(self.engine, &take, tar, reference)
            .run_streaming(move |s| l.detail(s))
            .with_context(|| {
                format!(
                    "importing {reference} failed; check `{} info` and free disk space",
                    self.engine.name()
                )
            })?;
        Ok(())
    }
}

/// The image id of `reference`, or `None` when there is no such image.
pub fn image_id(engine: &Engine, reference: &str) -> Result<Option<String>> {
    if engine.is_podman() {
        let out = engine.cmd().args(["image", "exists", reference]).output()?;
        match out.status.code() {
            Some(0) => {}
            Some(1) => return Ok(None),
            _ => bail!(
                "`podman image exists {reference}` failed: {}; check podman with `podman info`",
                out.tail(5)
            ),
        }
    }
    let out = engine
        .cmd()
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()?;
    if !out.success() {
        return Ok(None);
    }
    Ok(out
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string))
}

/// The image's size, for the progress line.
pub fn image_size(engine: &Engine, reference: &str) -> String {
    engine
        .cmd()
        .args(["image", "inspect", "--format", "{{.Size}}", reference])
        .read()
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(crate::host::disk::human_bytes)
        .unwrap_or_else(|| "size unknown".to_string())
}

/// After `--force`: removes the image the new one replaced, when it is a stand-in and unused.
pub fn remove_replaced(engine: &Engine, reference: &str, old: &str, progress: &Progress) {
    let new = image_id(engine, reference).ok().flatten();
    if new.as_deref() == Some(old) {
        return;
    }
    // Selected by our stand-in label only, like every removal (engine.rs).
    let old_id = old.trim_start_matches("sha256:");
    let ours: Vec<_> = match engine.images(&crate::plan::labels::Filter::standins()) {
        Ok(all) => all
            .into_iter()
            .filter(|i| i.id.starts_with(old_id) || old_id.starts_with(i.id.as_str()))
            .collect(),
        Err(_) => return,
    };
    if ours.is_empty() || !ours.iter().all(|i| i.tags.is_empty()) {
        return;
    }
    if let Err(e) = engine.remove_images(&ours) {
        progress.println(&format!(
            "the replaced image {old} of {reference} was kept ({}); `cargo xtask clean-images` does not touch stand-ins: remove it with `{} rmi {old}` when unused",
            format!("{e:#}").lines().last().map(str::trim).unwrap_or("in use"),
            engine.name()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tools::Tool;
    use crate::standins::recipes::{recipe, RECIPES};

    fn engine(tool: Tool) -> Engine {
        Engine {
            tool,
            program: format!("/usr/bin/{}", tool.name()).into(),
        }
    }

    #[test]
    fn podman_takes_every_change() {
        for r in RECIPES {
            let (take, leave) = changes(Importer::Podman, &r, "alice", 7);
            assert_eq!(take, r.changes("alice", 7));
            assert!(leave.is_empty(), "{leave:?}");
        }
    }

    #[test]
    fn docker_takes_what_its_import_accepts() {
        for r in RECIPES {
            let (take, leave) = changes(Importer::Docker, &r, "alice", 7);
            let want_left: Vec<String> = if r.service == "postgres" {
                vec!["STOPSIGNAL SIGINT".to_string()]
            } else {
                Vec::new()
            };
            assert_eq!(leave, want_left, "{}", r.service);
            for c in &take {
                let keyword = c.split_whitespace().next().unwrap();
                assert!(DOCKER_IMPORT_CHANGES.contains(&keyword), "{c}");
            }
            assert_eq!(take.len() + leave.len(), r.changes("alice", 7).len());
        }
        let pg = changes(Importer::Docker, &recipe("postgres").unwrap(), "a", 1).0;
        for want in ["CMD [\"postgres\"]", "EXPOSE 5432", "ENV LANG=C.UTF-8"] {
            assert!(pg.iter().any(|c| c == want), "missing {want} in {pg:?}");
        }
        assert!(pg.iter().any(|c| c.starts_with("ENTRYPOINT")));
        assert!(pg.iter().filter(|c| c.starts_with("LABEL ")).count() >= 6);
    }

    #[test]
    fn docker_refuses_what_dockerd_20_10_refuses() {
        for refused in [
            "STOPSIGNAL SIGINT",
            "SHELL [\"/bin/sh\", \"-c\"]",
            "ARG X=1",
            "MAINTAINER me",
            "RUN true",
            "FROM scratch",
        ] {
            assert!(!Importer::Docker.accepts(refused), "{refused}");
            assert!(Importer::Podman.accepts(refused), "{refused}");
        }
        for taken in [
            "HEALTHCHECK CMD true",
            "USER 1000",
            "VOLUME /v",
            "ONBUILD RUN true",
            "label a=b",
        ] {
            assert!(Importer::Docker.accepts(taken), "{taken}");
        }
    }

    #[test]
    fn import_argv_per_engine() {
        let r = recipe("redis").unwrap();
        for tool in [Tool::Podman, Tool::Docker] {
            let e = engine(tool);
            let (take, _) = changes(Importer::of(&e), &r, "bob", 1);
            let argv = import_cmd(&e, &take, Path::new("/t/redis.tar"), r.reference).argv();
            assert_eq!(argv[0], format!("/usr/bin/{}", tool.name()));
            assert_eq!(argv[1], "import");
            assert_eq!(
                argv[argv.len() - 4..],
                [
                    "--message",
                    DESCRIPTION,
                    "/t/redis.tar",
                    "localhost/xtask-standin/redis:7-bookworm"
                ]
            );
            let given: Vec<&String> = argv
                .windows(2)
                .filter(|w| w[0] == "--change")
                .map(|w| &w[1])
                .collect();
            assert_eq!(given.len(), take.len());
            assert!(given.iter().any(|c| *c == "EXPOSE 6379"));
        }
        let pg = recipe("postgres").unwrap();
        let docker = engine(Tool::Docker);
        let (take, _) = changes(Importer::of(&docker), &pg, "bob", 1);
        let argv = import_cmd(&docker, &take, Path::new("/t/pg.tar"), pg.reference).argv();
        assert!(
            !argv.iter().any(|a| a.starts_with("STOPSIGNAL")),
            "{argv:?}"
        );
    }
}
