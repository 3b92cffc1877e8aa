//! Image builds through the input cache: the inputs are hashed (context files, Dockerfile,
//! build arguments but the volatile ones, the base image's id); when an image with the same
//! key exists the run only gives it its own reference (`tag`); otherwise it is built under
//! `localhost/xtask-cache/<component>:<key>` and the run's reference, with the cache's labels
//! (no run label: the run's teardown removes only its name, from the run record).

use std::fmt;

use anyhow::{Context, Result};

use super::{Command, Runner};
use crate::exec::cache::{Inputs, VOLATILE_ARGS};
use crate::exec::dag::Ctx;
use crate::plan::labels;
use crate::plan::specs::BuildSpec;

/// A build that may be served by the cache.
#[derive(Debug, Clone)]
pub struct Cached {
    pub component: String,
    /// Its `reference` is the run's own.
    pub spec: BuildSpec,
    /// The compiled binary's file name in the context (to say "binary changed").
    pub binary: Option<String>,
    /// `--rebuild`: build even when the cache has the image.
    pub rebuild: bool,
    /// The build as it runs on a miss, with `{key}` for the key (the dry run's text).
    pub build: Command,
    /// The engine's program, for the dry run's text of the tag command.
    pub engine: String,
}

/// What the cache did for one task (the run report's `cache` and `why`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Note {
    pub cache: &'static str,
    pub key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub why: String,
}

/// `localhost/xtask-cache/<component>:<key>`.
pub fn cache_ref(component: &str, key: &str) -> String {
    format!("{}{component}:{key}", crate::plan::labels::CACHE_NAMES)
}

/// The build under the cache's name and labels, also named with the run's reference.
pub fn cache_spec(c: &Cached, key: &str) -> BuildSpec {
    BuildSpec {
        reference: cache_ref(&c.component, key),
        tags: vec![c.spec.reference.clone()],
        labels: labels::cache_labels(&c.spec.labels, key),
        ..c.spec.clone()
    }
}

impl fmt::Display for Cached {
    /// Both ways a cached build can go, for the dry run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "# if an image with these inputs is cached (labelled {}={{key}}, whatever its \
             name):\n    $? {} tag <cached-image-id> {}\n    # else:\n    $? {}",
            labels::CACHE_KEY,
            self.engine,
            self.spec.reference,
            self.build
        )
    }
}

impl Runner<'_> {
    pub(super) fn cached_build(&self, task: &str, c: &Cached, ctx: &Ctx) -> Result<String> {
        ctx.line.state("hashing", "the image's inputs");
        let inputs = self.inputs(&c.spec)?;
        let key = inputs.key();
        let found = if c.rebuild {
            None
        } else {
            self.engine
                .cached_image(&cache_ref(&c.component, &key), &key)?
        };
        let note = |cache, why: String| Note {
            cache,
            key: key.clone(),
            why,
        };
        if let Some(image) = found {
            let tag = self.engine.tag_cmd(&image.id, &c.spec.reference);
            self.log(&tag);
            // `ImageInfo::id` is the bare hex id.
            let short = image.short_id();
            ctx.line
                .state("reusing", &format!("image {short}, cached with key {key}"));
            self.engine
                .tag(&tag, &c.spec.reference)
                .with_context(|| format!("naming the cached image {}", image.id))?;
            self.ids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(c.spec.reference.clone(), image.id.clone());
            // The baseline of the next miss's explanation, also when another checkout built
            // the image (as data images are remembered on a hit).
            self.cache.remember(&key, &inputs, &c.component)?;
            self.note(task, note("hit", String::new()));
            return Ok(format!("cached ({key})"));
        }
        let why = match (c.rebuild, self.cache.latest(&c.component)) {
            (true, _) => "--rebuild".to_string(),
            (false, Some(old)) => {
                let changed = inputs.explain(&old, c.binary.as_deref());
                if changed.is_empty() {
                    "no cached image".into()
                } else {
                    changed.join(", ")
                }
            }
            (false, None) => "no earlier build here".to_string(),
        };
        let build = self.engine.build_cmd(&cache_spec(c, &key));
        self.log(&build);
        ctx.line
            .state("building", &format!("{} ({why})", c.spec.reference));
        let show = ctx.line.detail_sink();
        build
            .run_streaming(move |l| show(l.trim()))
            .with_context(|| format!("building {}", c.spec.reference))?;
        self.cache.remember(&key, &inputs, &c.component)?;
        let owner = c
            .spec
            .labels
            .get(labels::OWNER)
            .cloned()
            .unwrap_or_default();
        self.supersede(&key, &owner, ctx);
        self.note(task, note("miss", why.clone()));
        Ok(format!("built: {why}"))
    }

    /// Every input of a build: context files, the Dockerfile, stable build arguments, and the
    /// id of each image a build argument names (a changed base makes a new key).
    fn inputs(&self, spec: &BuildSpec) -> Result<Inputs> {
        let mut m = self.cache.tree(&spec.context)?;
        let meta = std::fs::metadata(&spec.dockerfile)
            .with_context(|| format!("reading {}", spec.dockerfile.display()))?;
        m.insert(
            "dockerfile:".into(),
            self.cache.file(&spec.dockerfile, &meta)?,
        );
        for (k, v) in &spec.build_args {
            if VOLATILE_ARGS.contains(&k.as_str()) {
                continue;
            }
            m.insert(format!("arg:{k}"), v.clone());
            if k == "BASE" || k == "BASE_IMAGE" {
                let id = self.image_id(v).with_context(|| {
                    format!("the base image {v} is not in local storage (`cargo xtask doctor`)")
                })?;
                m.insert(format!("base:{k}"), id);
            }
        }
        Ok(Inputs(m))
    }

    /// An image's archive: from the cache when this image id was saved before (else saved
    /// now), copied naming the run's reference.
    pub(super) fn save_cached(
        &self,
        task: &str,
        reference: &str,
        archive: &std::path::Path,
        rebuild: bool,
        ctx: &Ctx,
    ) -> Result<String> {
        let id = self
            .image_id(reference)
            .with_context(|| format!("{reference} is not in local storage"))?;
        let key = crate::exec::cache::Cache::archive_key(&id);
        let dir = self.cache.archives();
        std::fs::create_dir_all(&dir)?;
        let cached = dir.join(format!("{key}.tar"));
        // Two components of one image (or two runs) save the same key one after the other.
        let lock = std::fs::File::create(dir.join(format!("{key}.lock")))?;
        if lock.try_lock().is_err() {
            ctx.line.state("waiting", "for another save of this image");
            lock.lock()?;
        }
        let hit = !rebuild && cached.exists();
        if !hit {
            let partial = dir.join(format!("{key}.tar.partial"));
            let save = self.engine.save_cmd(reference, &partial);
            self.log(&save);
            ctx.line.state("saving", reference);
            save.run().with_context(|| format!("saving {reference}"))?;
            std::fs::rename(&partial, &cached)?;
        }
        ctx.line.state("copying", &archive.display().to_string());
        let bytes = crate::exec::archive::rename(&cached, archive, reference)?;
        self.cache.used(&format!("archive-{key}"))?;
        let why = if hit {
            String::new()
        } else if rebuild {
            "--rebuild".into()
        } else {
            "not saved before".into()
        };
        self.note(
            task,
            Note {
                cache: if hit { "hit" } else { "miss" },
                key,
                why,
            },
        );
        Ok(format!(
            "{} MB{}",
            bytes / 1_000_000,
            if hit { " (archive reused)" } else { "" }
        ))
    }

    pub(super) fn note(&self, task: &str, n: Note) {
        if let Ok(mut notes) = self.notes.lock() {
            notes.insert(task.to_string(), n);
        }
    }
}
