//! What a task does, as a list of [`Action`]s: the one description from which both the dry run
//! (their text) and the real run ([`Runner::perform`]) come, so the two cannot disagree.
//! `exec::steps` turns each plan step into its actions; this module runs them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::exec::builds;
use crate::exec::dag::Ctx;
use crate::exec::process::{Cmd, Timed, Uninterruptible};
use crate::exec::record::{Event, Record};
use crate::host::kube::Kubectl;
use crate::host::tools::Engine;
use crate::plan::probe::Probe;
use crate::plan::render::Workload;

pub mod build;
mod pods;
pub mod shared;

/// A command of any mode.
#[derive(Debug, Clone)]
pub enum Command {
    Plain(Cmd),
    Timed(Cmd<Timed>),
    /// Changes the engine's state: never interrupted.
    Engine(Cmd<Uninterruptible>),
    /// A `tag` of this engine giving the name `.2` (checked: see [`Engine::tag`]).
    Tag(Engine, Cmd<Uninterruptible>, String),
}

impl Command {
    fn run(&self, on_line: impl FnMut(&str) + Send + 'static) -> Result<String> {
        let out = match self {
            Command::Plain(c) => c.run_streaming(on_line),
            Command::Timed(c) => c.run_streaming(on_line),
            Command::Engine(c) => c.run_streaming(on_line),
            Command::Tag(engine, c, target) => {
                engine.tag(c, target)?;
                return Ok(String::new());
            }
        }?;
        Ok(out.stdout)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Plain(c) => c.fmt(f),
            Command::Timed(c) => c.fmt(f),
            Command::Engine(c) | Command::Tag(_, c, _) => c.fmt(f),
        }
    }
}

/// What a command's output is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Shown on the task's progress line as it comes.
    Show,
    /// cargo's JSON messages: the binaries it built, for image contexts.
    Artifacts,
}

/// One thing a task does.
#[derive(Debug, Clone)]
pub enum Action {
    /// A resource goes into the run record before the command that creates it starts.
    Record(Event),
    /// A file the next commands read.
    Write { path: PathBuf, text: String },
    /// A folder the next commands write into.
    Mkdir(PathBuf),
    /// A build context: the compiled `binary` at its root, the `extra` paths under their names.
    Assemble {
        binary: String,
        extra: Vec<PathBuf>,
        context: PathBuf,
    },
    Run {
        state: &'static str,
        cmd: Command,
        output: Use,
        /// What failed, when it fails (context for the error).
        what: String,
    },
    /// An image built only when no cached image has the same inputs; either way the run's
    /// reference ends up naming it (see `exec::cache`).
    CachedBuild(build::Cached),
    /// The image's archive for the cluster: saved once per image id into the cache, copied
    /// with the run's reference into `archive`.
    SaveCached {
        reference: String,
        archive: PathBuf,
        rebuild: bool,
        /// The save as it runs when no archive of the image is cached (the dry run's text).
        save: Command,
    },
    /// The cached images of `key` (made by `owner`) that the image just made replaced go,
    /// unless a container uses them (see `removal::superseded`).
    Supersede { key: String, owner: String },
    /// What the cache did (for the report) and the task's summary.
    Note {
        cache: &'static str,
        key: String,
        why: String,
        summary: String,
    },
    /// Registry runs: push one image (over a run-labelled config) and pin its digest.
    Push(shared::Push),
    /// Registry runs: wait for one of the cluster's run slots (`docs[i]` creates slot i).
    Admit {
        kubectl: Kubectl,
        system_doc: String,
        docs: Vec<String>,
        host: String,
    },
    /// Registry runs: `kubectl apply` of `text` with each of `images` pinned by its digest.
    ApplyPinned {
        kubectl: Kubectl,
        text: String,
        images: BTreeSet<String>,
    },
    /// Registry runs: a supervised port-forward for the tests.
    Forward {
        kubectl: Kubectl,
        namespace: String,
        forward: crate::plan::e2e::shared::Forward,
    },
    /// One of the host-wide cluster-creation slots (held until the run ends).
    Slot { slots: usize, holder: String },
    /// A container's readiness check passes (it must keep running meanwhile).
    Ready {
        container: String,
        probe: Probe,
        timeout: Duration,
    },
    /// A one-shot container exits 0.
    Exit {
        container: String,
        args: Vec<String>,
        timeout: Duration,
    },
    /// The cluster's node lists these images (what was loaded is what the manifests use).
    OnNode {
        get_nodes: Cmd<Timed>,
        images: BTreeSet<String>,
    },
    /// The workload's pods are ready; an image that cannot be pulled or a crash loop fails.
    Pods {
        get_pods: Cmd<Timed>,
        workload: Workload,
        component: String,
        timeout: Duration,
    },
}

impl fmt::Display for Action {
    /// The dry run's text: `$ argv` for commands, `# ...` for the rest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Record(e) => write!(f, "# record {}", e.describe()),
            Action::Write { path, .. } => write!(f, "# write {}", path.display()),
            Action::Mkdir(path) => write!(f, "# mkdir {}", path.display()),
            Action::Assemble {
                binary,
                extra,
                context,
            } => write!(
                f,
                "# assemble {} from binary `{binary}`{}",
                context.display(),
                extra
                    .iter()
                    .map(|e| format!(" + {}", e.display()))
                    .collect::<String>()
            ),
            Action::Run { cmd, .. } => write!(f, "$ {cmd}"),
            Action::CachedBuild(c) => c.fmt(f),
            Action::Note { summary, .. } => write!(f, "# {summary}"),
            Action::Supersede { key, .. } => write!(
                f,
                "# remove the cached images of key {key} that this one replaced (no name left, \
                 no container using them)"
            ),
            Action::Push(p) => write!(
                f,
                "# FROM {} with the run's labels, as {}\n    # push it, pin the digest it returns",
                p.local, p.remote
            ),
            Action::Admit { kubectl, docs, .. } => write!(
                f,
                "$ {}   # one of {} run slots, waiting while all are taken",
                kubectl.create(""),
                docs.len()
            ),
            Action::ApplyPinned { kubectl, images, .. } => write!(
                f,
                "$ {}   # images pinned by digest: {}",
                kubectl.apply(""),
                images.iter().cloned().collect::<Vec<_>>().join(" ")
            ),
            Action::Forward { kubectl, namespace, forward } => write!(
                f,
                "$ {}   # supervised; {}",
                kubectl.port_forward(namespace, &forward.service, 0, forward.target_port),
                forward.var
            ),
            Action::SaveCached { save, archive, .. } => write!(
                f,
                "# unless an archive of this image is cached:\n    $? {save}\n    # then its copy naming the run's reference: {}",
                archive.display()
            ),
            Action::Slot { slots, .. } => {
                write!(f, "# wait for one of {slots} host-wide cluster slots")
            }
            Action::Ready { probe, timeout, .. } => {
                write!(
                    f,
                    "# until ready: {} (at most {}s)",
                    probe.describe(),
                    timeout.as_secs()
                )
            }
            Action::Exit {
                container, timeout, ..
            } => {
                write!(
                    f,
                    "# until {container} exits 0 (at most {}s)",
                    timeout.as_secs()
                )
            }
            Action::OnNode { get_nodes, images } => write!(
                f,
                "$ {get_nodes}   # until the node lists {}",
                images.iter().cloned().collect::<Vec<_>>().join(" ")
            ),
            Action::Pods {
                get_pods, workload, ..
            } => {
                write!(f, "$ {get_pods}   # until {} is ready", workload.selector())
            }
        }
    }
}

/// Runs actions: the engine, the run record, the binaries of the run's compile, and a log of
/// every command run (`commands.log` in the run's folder; the dry-run test compares it).
pub struct Runner<'a> {
    pub engine: &'a Engine,
    pub record: &'a Record,
    pub root: &'a Path,
    artifacts: Mutex<BTreeMap<String, PathBuf>>,
    log: Mutex<Option<std::fs::File>>,
    cache: crate::exec::cache::Cache,
    /// Per task: whether its image came from the cache, and why not.
    notes: Mutex<BTreeMap<String, build::Note>>,
    /// Registry runs: each pushed tag -> the reference pinned by its digest.
    pins: Mutex<BTreeMap<String, String>>,
    /// Registry runs: bytes each push task really sent.
    bytes: Mutex<BTreeMap<String, u64>>,
    forwards: Mutex<Vec<shared::Forwarding>>,
    /// Image ids this run learnt (reference -> id): a base asked once, a cached image's id
    /// known from its lookup, so the save after it need not ask again.
    ids: Mutex<BTreeMap<String, String>>,
    /// The last `get pods` (by its command line): when it was asked, and its answer.
    pods_seen: Mutex<BTreeMap<String, (Instant, String)>>,
}

impl<'a> Runner<'a> {
    pub fn new(engine: &'a Engine, record: &'a Record, root: &'a Path, run_dir: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(run_dir.join("commands.log"))
            .ok();
        Runner {
            engine,
            record,
            root,
            artifacts: Mutex::new(BTreeMap::new()),
            log: Mutex::new(log),
            cache: crate::exec::cache::Cache::open(&crate::exec::record::target_dir(root)),
            notes: Mutex::new(BTreeMap::new()),
            pins: Mutex::new(BTreeMap::new()),
            bytes: Mutex::new(BTreeMap::new()),
            forwards: Mutex::new(Vec::new()),
            ids: Mutex::new(BTreeMap::new()),
            pods_seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Removes what a new image of `key` replaced. Not this run's failure when it fails: the
    /// task line says so, and `clean-images` removes them later.
    fn supersede(&self, key: &str, owner: &str, ctx: &Ctx) {
        let filter =
            crate::plan::labels::Filter::cache_key(key).and(crate::plan::labels::OWNER, owner);
        match crate::host::removal::remove_superseded(self.engine, &filter) {
            Ok(gone) if !gone.is_empty() => {
                let short: Vec<&str> = gone.iter().map(|i| i.short_id()).collect();
                ctx.line.state(
                    "removed",
                    &format!("the image(s) it replaced: {}", short.join(", ")),
                );
                for i in &gone {
                    if let Err(e) = self.cache.forget_archive(&i.id) {
                        ctx.line.state("kept", &format!("{e:#}"));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => ctx.line.state(
                "kept",
                &format!(
                    "the image(s) it replaced ({e:#}); `cargo xtask clean-images` removes them"
                ),
            ),
        }
    }

    /// The id of `reference`, asked of the engine once per run.
    fn image_id(&self, reference: &str) -> Option<String> {
        let ids = || {
            self.ids
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        let known = ids().get(reference).cloned();
        known.or_else(|| {
            let id = self.engine.image_id(reference)?;
            ids().insert(reference.to_string(), id.clone());
            Some(id)
        })
    }

    /// Performs a task's actions in order; the task's summary is the last one's. A slot is
    /// held until the task ends.
    pub fn perform_all(&self, task: &str, actions: &[Action], ctx: &Ctx) -> Result<String> {
        let mut summary = String::new();
        let mut _held = Vec::new();
        for a in actions {
            if let Action::Slot { slots, holder } = a {
                let line = ctx.line;
                _held.push(crate::exec::slots::acquire(
                    &crate::exec::slots::default_dir(),
                    *slots,
                    holder,
                    Duration::from_secs(1800),
                    &|holders| line.state("waiting for a cluster slot", &holders.join("; ")),
                    &|| ctx.stopped(),
                )?);
            } else if let Action::SaveCached {
                reference,
                archive,
                rebuild,
                ..
            } = a
            {
                summary = self.save_cached(task, reference, archive, *rebuild, ctx)?;
            } else if let Action::Push(p) = a {
                summary = self.push(task, p, ctx)?;
            } else if let Action::Admit {
                kubectl,
                system_doc,
                docs,
                host,
            } = a
            {
                summary = self.admit(kubectl, system_doc, docs, host, ctx)?;
            } else if let Action::Forward {
                kubectl,
                namespace,
                forward,
            } = a
            {
                summary = self.forward(kubectl, namespace, forward, ctx)?;
            } else if let Action::CachedBuild(c) = a {
                summary = self.cached_build(task, c, ctx)?;
            } else if let Action::Note {
                cache,
                key,
                why,
                summary: s,
            } = a
            {
                let note = build::Note {
                    cache,
                    key: key.clone(),
                    why: why.clone(),
                };
                self.note(task, note);
                summary = s.clone();
            } else if let Some(s) = self.perform(a, ctx)? {
                summary = s;
            }
        }
        Ok(summary)
    }

    fn perform(&self, a: &Action, ctx: &Ctx) -> Result<Option<String>> {
        match a {
            Action::Record(e) => self.record.add(e).map(|_| None),
            Action::Supersede { key, owner } => {
                self.supersede(key, owner, ctx);
                Ok(None)
            }
            Action::Write { path, text } => {
                if let Some(d) = path.parent() {
                    std::fs::create_dir_all(d)
                        .with_context(|| format!("creating {}", d.display()))?;
                }
                std::fs::write(path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(None)
            }
            Action::Mkdir(path) => {
                std::fs::create_dir_all(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                Ok(None)
            }
            Action::Assemble {
                binary,
                extra,
                context,
            } => {
                let exe = self.binary(binary)?;
                builds::assemble(context, self.root, &exe, binary, extra)?;
                Ok(None)
            }
            Action::Run {
                state,
                cmd,
                output,
                what,
            } => self.run(state, cmd, *output, what, ctx),
            Action::ApplyPinned {
                kubectl,
                text,
                images,
            } => self.apply_pinned(kubectl, text, images).map(|_| None),
            Action::Slot { .. }
            | Action::Push(_)
            | Action::Admit { .. }
            | Action::Forward { .. }
            | Action::CachedBuild(_)
            | Action::Note { .. }
            | Action::SaveCached { .. } => Ok(None),
            Action::Ready {
                container,
                probe,
                timeout,
            } => {
                let took = crate::host::ready::wait(self.engine, container, probe, *timeout, ctx)?;
                Ok(Some(format!(
                    "ready ({}, after {:.1}s)",
                    probe.describe(),
                    took.as_secs_f64()
                )))
            }
            Action::Exit {
                container,
                args,
                timeout,
            } => self.exit(container, args, *timeout, ctx),
            Action::OnNode { get_nodes, images } => {
                self.on_node(get_nodes, images, ctx).map(|_| None)
            }
            Action::Pods {
                get_pods,
                workload,
                component,
                timeout,
            } => self
                .pods(get_pods, workload, component, *timeout, ctx)
                .map(Some),
        }
    }

    /// What the cache did for each task, for the run report.
    pub fn cache_notes(&self) -> BTreeMap<String, build::Note> {
        self.cache.save_hashes();
        self.notes.lock().map(|n| n.clone()).unwrap_or_default()
    }

    /// Bytes each push task sent (registry runs), for the run report.
    pub fn bytes_sent(&self) -> BTreeMap<String, u64> {
        self.bytes.lock().map(|b| b.clone()).unwrap_or_default()
    }

    fn set_bytes(&self, task: &str, n: u64) {
        if let Ok(mut b) = self.bytes.lock() {
            b.insert(task.to_string(), n);
        }
    }

    fn log(&self, cmd: &dyn fmt::Display) {
        if let Ok(mut guard) = self.log.lock() {
            if let Some(f) = guard.as_mut() {
                let _ = writeln!(f, "{cmd}");
            }
        }
    }

    fn run(
        &self,
        state: &str,
        cmd: &Command,
        output: Use,
        what: &str,
        ctx: &Ctx,
    ) -> Result<Option<String>> {
        self.log(cmd);
        ctx.line
            .state(state, &crate::host::ready::one_line(&cmd.to_string(), 200));
        let show = ctx.line.detail_sink();
        let out = cmd
            .run(move |l| {
                if !l.starts_with('{') && !l.trim().is_empty() {
                    show(l.trim());
                }
            })
            .with_context(|| what.to_string())?;
        match output {
            Use::Show => Ok(None),
            Use::Artifacts => {
                let found = builds::parse_artifacts(&out);
                let n = found.len();
                self.artifacts
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the build state lock was poisoned"))?
                    .extend(found);
                Ok(Some(format!("{n} binaries")))
            }
        }
    }

    fn binary(&self, name: &str) -> Result<PathBuf> {
        self.artifacts
            .lock()
            .map_err(|_| anyhow::anyhow!("the build state lock was poisoned"))?
            .get(name)
            .cloned()
            .with_context(|| {
                format!(
                    "cargo built no binary `{name}` (check the service's `binary` in infra.toml)"
                )
            })
    }

    fn exit(
        &self,
        container: &str,
        args: &[String],
        timeout: Duration,
        ctx: &Ctx,
    ) -> Result<Option<String>> {
        ctx.line.state("running", &args.join(" "));
        let code = self.engine.wait_exit(container, timeout)?;
        if code != 0 {
            bail!(
                "{container} (a one-shot job) exited with {code}; its last log lines:\n{}",
                crate::exec::process::indent(&self.engine.logs_tail(container, 30))
            );
        }
        Ok(Some("completed".into()))
    }
}
