//! `cargo xtask standins`: local stand-ins for the third-party images of `infra.toml`, built from Debian packages.
//!
//! For hosts where no registry answers. One `debootstrap --variant=minbase` of Debian bookworm is
//! cached under `target/xtask/standins/`; every image starts from a copy of it, gets its packages
//! with `apt-get` in a chroot (proc mounted for that time only), is packed with `tar` and becomes
//! an image through `podman import --change ...`. The three images are built in parallel, each on
//! its own progress line; images that exist are skipped unless `--force`.
//!
//! `infra.toml` is never edited: the command prints `export XTASK_IMAGE_...=...` lines on stdout
//! (everything else goes to stderr), so `eval "$(cargo xtask standins --print-env)"` points the
//! workspace at the stand-ins.
//!
//! Building is podman-only (`podman import`); with docker the command says so and stops, while
//! `--print-env` works with either engine.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::{Config, Image};
use crate::exec::process::{shell_quote, Cmd};
use crate::exec::progress::{Line, Progress};
use crate::flags;
use crate::host::tools::{Engine, Need, Tool};
use crate::plan::labels::{CREATED, OWNER, SERVICE, STANDIN};

/// The Debian release every stand-in is built from (glibc 2.36, like our build hosts).
const SUITE: &str = "bookworm";
/// Packages of the shared base rootfs, on top of minbase.
const BASE_INCLUDE: &str = "ca-certificates";
const DESCRIPTION: &str = "stand-in built from Debian packages by cargo xtask standins";
const ENTRYPOINT: &str = "/usr/local/bin/docker-entrypoint.sh";
const POSTGRES_ENTRYPOINT: &str = include_str!("postgres-entrypoint.sh");
const REDIS_ENTRYPOINT: &str = include_str!("redis-entrypoint.sh");
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Keeps package scripts from starting services (redis-server, postgresql) inside the chroot.
const POLICY_RC_D: &str =
    "#!/bin/sh\n# cargo xtask standins: start no services while packages are installed\nexit 101\n";
const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
const SOURCES_LIST: &str = "/etc/apt/sources.list";
const NEED_ROOT: &str =
    "stand-ins need root for debootstrap and chroot; run as root, e.g. `sudo -E cargo xtask standins`";

/// How one stand-in image is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    /// The `[images.*]` name in `infra.toml`, and the value of the service label.
    pub service: &'static str,
    /// The image reference (fixed: CI and other commands rely on it).
    pub reference: &'static str,
    title: &'static str,
    /// `apt-get install` rounds, in order (postgresql-common must be configured before the
    /// server package, or its postinst creates a cluster we do not want).
    rounds: &'static [&'static [&'static str]],
    /// The entrypoint script's text, installed as [`ENTRYPOINT`].
    entrypoint: Option<&'static str>,
    /// Commands run in the chroot after the packages (argv).
    setup: &'static [&'static [&'static str]],
    /// `--change` instructions besides the labels.
    config: &'static [&'static str],
}

const RECIPES: [Recipe; 3] = [
    Recipe {
        service: "postgres",
        reference: "localhost/xtask-standin/postgres:15-bookworm",
        title: "PostgreSQL 15 stand-in (Debian bookworm)",
        rounds: &[&["postgresql-common"], &["postgresql-15"]],
        entrypoint: Some(POSTGRES_ENTRYPOINT),
        setup: &[
            &["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "3777", "/var/run/postgresql"],
            &["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "700", "/var/lib/postgresql/data"],
        ],
        config: &[
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/lib/postgresql/15/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV PGDATA=/var/lib/postgresql/data",
            "ENV LANG=C.UTF-8",
            "ENTRYPOINT [\"/usr/local/bin/docker-entrypoint.sh\"]",
            "CMD [\"postgres\"]",
            "EXPOSE 5432",
            "STOPSIGNAL SIGINT",
        ],
    },
    Recipe {
        service: "redis",
        reference: "localhost/xtask-standin/redis:7-bookworm",
        title: "Redis 7 stand-in (Debian bookworm)",
        rounds: &[&["redis-server"]],
        entrypoint: Some(REDIS_ENTRYPOINT),
        setup: &[&["install", "-d", "-o", "redis", "-g", "redis", "-m", "755", "/data"]],
        config: &[
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENTRYPOINT [\"/usr/local/bin/docker-entrypoint.sh\"]",
            "CMD [\"redis-server\"]",
            "WORKDIR /data",
            "EXPOSE 6379",
        ],
    },
    Recipe {
        service: "runtime",
        reference: "localhost/xtask-standin/runtime:bookworm",
        title: "Debian bookworm runtime stand-in (minbase + ca-certificates)",
        // ca-certificates is in the base already.
        rounds: &[],
        entrypoint: None,
        setup: &[],
        config: &["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CMD [\"/bin/bash\"]"],
    },
];

/// The recipe an `[images.*]` names in `standin`, if any.
pub fn recipe_of(image: &Image) -> Option<Recipe> {
    image.standin.as_deref().and_then(recipe)
}

/// The stand-in recipe called `name`, if there is one.
pub fn recipe(name: &str) -> Option<Recipe> {
    RECIPES.iter().find(|r| r.service == name).copied()
}

impl Recipe {
    /// Every package this image installs on top of the base.
    pub fn packages(&self) -> Vec<&'static str> {
        self.rounds.iter().flat_map(|r| r.iter().copied()).collect()
    }

    /// The labels of the image.
    pub fn labels(&self, owner: &str, created: u64) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(STANDIN.to_string(), "1".to_string());
        m.insert(OWNER.to_string(), owner.to_string());
        m.insert(SERVICE.to_string(), self.service.to_string());
        m.insert(CREATED.to_string(), created.to_string());
        m.insert(
            "org.opencontainers.image.title".to_string(),
            self.title.to_string(),
        );
        m.insert(
            "org.opencontainers.image.description".to_string(),
            DESCRIPTION.to_string(),
        );
        m
    }

    /// The `--change` instructions of `podman import`: labels, then the image config.
    pub fn changes(&self, owner: &str, created: u64) -> Vec<String> {
        let mut out: Vec<String> = self
            .labels(owner, created)
            .into_iter()
            .map(|(k, v)| {
                format!(
                    "LABEL {k}=\"{}\"",
                    v.replace('\\', "\\\\").replace('"', "\\\"")
                )
            })
            .collect();
        out.extend(self.config.iter().map(|c| c.to_string()));
        out
    }
}

/// `export NAME=value`, quoted for a POSIX shell when needed.
pub fn export_line(env: &str, reference: &str) -> String {
    format!("export {env}={}", shell_quote(reference))
}

/// The mirror of the first deb822 stanza that serves `suite` (e.g. `bookworm`, not
/// `bookworm-security`); failing that, of the first `deb` stanza that is not a security one.
pub fn mirror_from_deb822(text: &str, suite: &str) -> Option<String> {
    let mut stanzas: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
    let mut last_key: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if stanzas.last().is_some_and(|s| !s.is_empty()) {
                stanzas.push(BTreeMap::new());
            }
            last_key = None;
            continue;
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        let Some(stanza) = stanzas.last_mut() else {
            continue;
        };
        if line.starts_with([' ', '\t']) {
            // A continuation line of a multi-line field.
            if let Some(v) = last_key.as_ref().and_then(|k| stanza.get_mut(k)) {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            stanza.insert(k.clone(), v.trim().to_string());
            last_key = Some(k);
        }
    }
    let words = |s: &BTreeMap<String, String>, k: &str| -> Vec<String> {
        s.get(k)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let usable: Vec<(Vec<String>, String)> = stanzas
        .iter()
        .filter(|s| words(s, "types").iter().any(|t| t == "deb"))
        .filter(|s| {
            !s.get("enabled")
                .is_some_and(|e| e.eq_ignore_ascii_case("no"))
        })
        .filter_map(|s| {
            let uri = words(s, "uris").into_iter().find(|u| is_http(u))?;
            Some((words(s, "suites"), uri))
        })
        .collect();
    usable
        .iter()
        .find(|(suites, _)| suites.iter().any(|s| s == suite))
        .or_else(|| {
            usable
                .iter()
                .find(|(suites, _)| !suites.iter().any(|s| s.ends_with("-security")))
        })
        .map(|(_, uri)| uri.trim_end_matches('/').to_string())
}

/// The mirror of the first `deb http...` line of a one-line-style sources list (preferring
/// one for `suite`).
pub fn mirror_from_list(text: &str, suite: &str) -> Option<String> {
    let entries: Vec<(String, String)> = text
        .lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let rest = line.strip_prefix("deb")?;
            if !rest.starts_with([' ', '\t']) {
                return None; // deb-src
            }
            let mut rest = rest.trim_start();
            if rest.starts_with('[') {
                rest = &rest[rest.find(']')? + 1..];
            }
            let mut words = rest.split_whitespace();
            let uri = words.next().filter(|u| is_http(u))?;
            let dist = words.next().unwrap_or_default();
            Some((dist.to_string(), uri.trim_end_matches('/').to_string()))
        })
        .collect();
    entries
        .iter()
        .find(|(d, _)| d == suite)
        .or_else(|| entries.first())
        .map(|(_, u)| u.clone())
}

fn is_http(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://")
}

/// The Debian mirror from apt's own configuration (deb822 first, then the one-line list).
pub fn find_mirror(deb822: Option<&str>, list: Option<&str>, suite: &str) -> Result<String> {
    deb822
        .and_then(|t| mirror_from_deb822(t, suite))
        .or_else(|| list.and_then(|t| mirror_from_list(t, suite)))
        .with_context(|| {
            format!(
                "no Debian mirror found in apt's configuration (looked for a `URIs: http...` line in \
                 {DEBIAN_SOURCES} and a `deb http...` line in {SOURCES_LIST}); configure apt with a \
                 reachable Debian mirror, check it with `apt-get update`, then run this again"
            )
        })
}

/// `createcluster.conf` with `create_main_cluster = false`, so installing postgresql-15 does
/// not create (and try to start) a cluster of its own; the entrypoint runs initdb.
pub fn disable_main_cluster(text: &str) -> String {
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            let t = l.trim_start().trim_start_matches('#').trim_start();
            if t.starts_with("create_main_cluster") && !found {
                found = true;
                "create_main_cluster = false".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !found {
        out.push("create_main_cluster = false".to_string());
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// The mount points at or below `dir` in a `/proc/self/mountinfo` text, deepest first.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the base rootfs was made from; a cached base with another stamp is made again.
pub fn base_stamp(mirror: &str) -> String {
    format!("suite={SUITE}\nvariant=minbase\ninclude={BASE_INCLUDE}\nmirror={mirror}\n")
}

pub mod resolve;

pub fn run(config: &Config, args: &flags::Standins, progress: &Progress) -> Result<()> {
    let needs: &[Need] = if args.print_env {
        &[Need::Engine]
    } else {
        &[Need::Engine, Need::Tool(Tool::Debootstrap)]
    };
    let engine = crate::host::tools::require(needs)?
        .context("no container engine; run `cargo xtask doctor`")?;

    // The images of infra.toml we have a recipe for.
    let mut wanted: Vec<(Recipe, &Image)> = Vec::new();
    for (name, image) in &config.images {
        match recipe_of(image) {
            Some(r) => wanted.push((r, image)),
            None => progress.println(&format!(
                "[images.{name}] names no stand-in (`standin = \"{}\"` picks a recipe); skipped",
                crate::config::STANDIN_RECIPES.join("\" | \"")
            )),
        }
    }

    if args.print_env {
        return print_env(&engine, &wanted, progress);
    }
    let recipes: Vec<Recipe> = wanted.iter().map(|(r, _)| *r).collect();
    build(config, &engine, &recipes, args.force, progress)?;
    print_exports(&engine, &wanted, progress)?;
    Ok(())
}

/// Builds the stand-ins of `recipes` that do not exist yet (all of them with `force`). Needs
/// root and debootstrap; says how to get them otherwise.
pub fn build(
    config: &Config,
    engine: &Engine,
    recipes: &[Recipe],
    force: bool,
    progress: &Progress,
) -> Result<()> {
    if !engine.is_podman() {
        bail!(
            "stand-ins are built with `podman import`, and the engine here is {}; install podman \
             (`cargo xtask doctor` says how) and run again with XTASK_ENGINE=podman",
            engine.name()
        );
    }
    if !crate::host::packages::is_root() {
        bail!("{NEED_ROOT}");
    }
    crate::exec::signals::install(
        "the stand-in builds".to_string(),
        "run `cargo xtask standins` again to finish",
    )?;
    let mut todo: Vec<(Recipe, Arc<Line>, Option<String>)> = Vec::new();
    for r in recipes {
        let line = Arc::new(progress.line(r.service));
        match image_id(engine, r.reference)? {
            Some(_) if !force => line.finish(true, &format!("exists, skipped ({})", r.reference)),
            old => todo.push((*r, line, old)),
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    build_all(config, engine, todo, force, progress)
}

/// `--print-env`: the export lines of the stand-ins that exist; an error names missing ones.
fn print_env(engine: &Engine, wanted: &[(Recipe, &Image)], progress: &Progress) -> Result<()> {
    let missing = print_exports(engine, wanted, progress)?;
    if !missing.is_empty() {
        bail!(
            "stand-in images not built yet: {}; build them with `sudo -E cargo xtask standins`",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Prints an export line (stdout) for every stand-in that exists; returns the missing ones.
fn print_exports(
    engine: &Engine,
    wanted: &[(Recipe, &Image)],
    progress: &Progress,
) -> Result<Vec<String>> {
    let mut missing = Vec::new();
    let mut lines = Vec::new();
    for (r, image) in wanted {
        if image_id(engine, r.reference)?.is_none() {
            missing.push(r.reference.to_string());
            continue;
        }
        match &image.env {
            Some(env) => lines.push(export_line(env, r.reference)),
            None => progress.println(&format!(
                "[images.{}] has no `env` in infra.toml, so it cannot be pointed at {} from the \
                 environment; add `env = \"XTASK_IMAGE_{}\"` there",
                image.name,
                r.reference,
                r.service.to_ascii_uppercase()
            )),
        }
    }
    if !lines.is_empty() {
        progress.println("to use the stand-ins: eval \"$(cargo xtask standins --print-env)\"");
        for l in &lines {
            println!("{l}");
        }
    }
    Ok(missing)
}

/// The image id of `reference`, or `None` when there is no such image.
fn image_id(engine: &Engine, reference: &str) -> Result<Option<String>> {
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

/// The base rootfs, then every image in its own thread.
fn build_all(
    config: &Config,
    engine: &Engine,
    todo: Vec<(Recipe, Arc<Line>, Option<String>)>,
    force: bool,
    progress: &Progress,
) -> Result<()> {
    let dir = crate::exec::record::target_dir(&config.root)
        .join("xtask")
        .join("standins");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let _lock = DirLock::take(&dir.join(".lock"))?;

    let lines: Vec<Arc<Line>> = todo.iter().map(|(_, l, _)| Arc::clone(l)).collect();
    let base = match host_mirror().and_then(|m| ensure_base(&dir, &m, force, &lines, progress)) {
        Ok(b) => b,
        Err(e) => {
            for l in &lines {
                l.finish(false, "failed: no base rootfs");
            }
            return Err(e);
        }
    };

    let owner = crate::plan::facts::sanitize_user(&crate::host::facts::login_name());
    let created = crate::host::facts::unix_now();
    let results: Vec<(Recipe, Result<String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = todo
            .iter()
            .map(|(r, line, old)| {
                let (dir, base, owner) = (&dir, &base, &owner);
                let h = s.spawn(move || {
                    let started = Instant::now();
                    let res = build_one(
                        engine,
                        r,
                        dir,
                        base,
                        owner,
                        created,
                        old.as_deref(),
                        line,
                        progress,
                    );
                    match &res {
                        Ok(size) => line.finish(
                            true,
                            &format!(
                                "built {} ({size}) in {}s",
                                r.reference,
                                started.elapsed().as_secs()
                            ),
                        ),
                        Err(e) => {
                            let first = format!("{e:#}");
                            let first = first.lines().next().unwrap_or_default().to_string();
                            line.finish(false, &format!("failed: {first}"));
                        }
                    }
                    res
                });
                (*r, h)
            })
            .collect();
        handles
            .into_iter()
            .map(|(r, h)| {
                (
                    r,
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("the build thread panicked"))),
                )
            })
            .collect()
    });

    if crate::exec::signals::interrupted() {
        bail!("interrupted: nothing half-built was kept; run `sudo -E cargo xtask standins` again to finish");
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(r, res)| res.as_ref().err().map(|e| format!("{}: {e:#}", r.service)))
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} stand-ins failed:\n{}\nfix the cause above and run `sudo -E cargo xtask standins` again \
             (images that were built are kept and skipped)",
            failed.len(),
            results.len(),
            failed.join("\n")
        );
    }
    Ok(())
}

fn host_mirror() -> Result<String> {
    let deb822 = fs::read_to_string(DEBIAN_SOURCES).ok();
    let list = fs::read_to_string(SOURCES_LIST).ok();
    find_mirror(deb822.as_deref(), list.as_deref(), SUITE)
}

/// The cached base rootfs (debootstrap once; again with `--force` or when the mirror changed).
fn ensure_base(
    dir: &Path,
    mirror: &str,
    force: bool,
    lines: &[Arc<Line>],
    progress: &Progress,
) -> Result<PathBuf> {
    let base = dir.join(format!("base-{SUITE}"));
    let stamp_file = dir.join(format!("base-{SUITE}.stamp"));
    let stamp = base_stamp(mirror);
    let cached = !force
        && base.join("usr/bin/apt-get").is_file()
        && fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp);
    if cached {
        return Ok(base);
    }
    let _ = fs::remove_file(&stamp_file);
    let tmp = dir.join(format!("base-{SUITE}.tmp"));
    remove_tree(&tmp)?;
    for l in lines {
        l.state(
            "debootstrap",
            &format!("shared base rootfs ({SUITE} minbase) from {mirror}"),
        );
    }
    let watchers: Vec<Arc<Line>> = lines.to_vec();
    let out = Cmd::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={BASE_INCLUDE}"))
        .arg(SUITE)
        .arg(&tmp)
        .arg(mirror)
        .env("LC_ALL", "C")
        .env_remove("LANGUAGE")
        .timeout(Duration::from_secs(30 * 60))
        .run_streaming(move |l| {
            for w in &watchers {
                w.detail(l);
            }
        });
    if let Err(e) = out {
        let _ = remove_tree(&tmp);
        return Err(e.context(format!(
            "debootstrap of {SUITE} from {mirror} failed; check that the mirror answers (`apt-get update`) \
             and that {} is on a file system that allows device files",
            dir.display()
        )));
    }
    remove_tree(&base)?;
    fs::rename(&tmp, &base)
        .with_context(|| format!("renaming {} to {}", tmp.display(), base.display()))?;
    crate::exec::record::write_atomically(&stamp_file, stamp.as_bytes())?;
    progress.println(&format!("base rootfs ready in {}", base.display()));
    Ok(base)
}

/// One image: copy the base, install, clean, pack, import. Returns the image size.
#[allow(clippy::too_many_arguments)]
fn build_one(
    engine: &Engine,
    r: &Recipe,
    dir: &Path,
    base: &Path,
    owner: &str,
    created: u64,
    old_id: Option<&str>,
    line: &Arc<Line>,
    progress: &Progress,
) -> Result<String> {
    let work = Work::new(
        dir.join(format!("work-{}", r.service)),
        dir.join(format!("{}.tar", r.service)),
        progress,
    )?;
    let root = work.root.clone();

    line.state("copying", "the base rootfs");
    Cmd::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(base)
        .arg(&root)
        .run()?;
    stop_if_interrupted()?;

    if !r.rounds.is_empty() {
        install_packages(r, &root, line)?;
    }
    if let Some(text) = r.entrypoint {
        let path = root.join(ENTRYPOINT.trim_start_matches('/'));
        write_file(&path, text, 0o755)?;
    }
    line.state("cleaning", "apt lists, caches, documentation");
    trim_rootfs(&root)?;

    line.state("packing", "tar of the rootfs");
    Cmd::new("tar")
        .args(["--numeric-owner", "--one-file-system", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&work.tar)
        .arg(".")
        .timeout(Duration::from_secs(20 * 60))
        .run()
        .context("packing the rootfs failed; check free disk space under target/")?;
    // The tree is not needed any more: free the disk space before podman copies the tar.
    work.remove_root()?;
    stop_if_interrupted()?;

    line.state("importing", r.reference);
    let mut import = engine.cmd().arg("import");
    for c in r.changes(owner, created) {
        import = import.arg("--change").arg(c);
    }
    let l = Arc::clone(line);
    import
        .arg("--message")
        .arg(DESCRIPTION)
        .arg(&work.tar)
        .arg(r.reference)
        .timeout(Duration::from_secs(20 * 60))
        .run_streaming(move |s| l.detail(s))
        .with_context(|| {
            format!(
                "importing {} failed; check `podman info` and free disk space",
                r.reference
            )
        })?;
    drop(work);

    if let Some(old) = old_id {
        remove_replaced(engine, r.reference, old, progress);
    }
    let size = engine
        .cmd()
        .args(["image", "inspect", "--format", "{{.Size}}", r.reference])
        .read()
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(crate::cmd::clean_images::human_bytes)
        .unwrap_or_else(|| "size unknown".to_string());
    Ok(size)
}

/// apt-get in the chroot, with proc mounted and services kept from starting.
fn install_packages(r: &Recipe, root: &Path, line: &Arc<Line>) -> Result<()> {
    // The chroot resolves names like the host for the time of the install.
    let resolv = fs::read("/etc/resolv.conf").unwrap_or_default();
    let _ = fs::remove_file(root.join("etc/resolv.conf"));
    fs::write(root.join("etc/resolv.conf"), resolv)
        .context("writing resolv.conf into the chroot")?;
    write_file(&root.join("usr/sbin/policy-rc.d"), POLICY_RC_D, 0o755)?;

    {
        let _proc = ProcMount::mount(root)?;
        line.state(
            "apt-get update",
            &format!("then install {}", r.packages().join(" ")),
        );
        // An unreachable mirror is an error here, not a warning followed by stale lists.
        chroot(root, &["apt-get", "update", "--error-on=any"], line)?;
        for round in r.rounds {
            line.state("installing", &round.join(" "));
            let mut argv = vec!["apt-get", "install", "-y", "--no-install-recommends"];
            argv.extend_from_slice(round);
            chroot(root, &argv, line)?;
            let cc = root.join("etc/postgresql-common/createcluster.conf");
            if let Ok(text) = fs::read_to_string(&cc) {
                fs::write(&cc, disable_main_cluster(&text))
                    .with_context(|| format!("writing {}", cc.display()))?;
            }
        }
        for cmd in r.setup {
            chroot(root, cmd, line)?;
        }
        chroot(root, &["apt-get", "clean"], line)?;
    }

    fs::remove_file(root.join("usr/sbin/policy-rc.d"))
        .context("removing policy-rc.d from the chroot")?;
    Ok(())
}

fn chroot(root: &Path, argv: &[&str], line: &Arc<Line>) -> Result<()> {
    let l = Arc::clone(line);
    Cmd::new("chroot")
        .arg(root)
        .args(argv)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("PATH", DEFAULT_PATH)
        .env("LC_ALL", "C.UTF-8")
        .env_remove("LANGUAGE")
        .timeout(Duration::from_secs(20 * 60))
        .run_streaming(move |s| l.detail(s))
        .map(|_| ())
        .with_context(|| {
            let advice = if argv.first() == Some(&"apt-get") {
                "; check that the Debian mirror answers (`apt-get update` on the host)"
            } else {
                ""
            };
            format!("`{}` in the chroot failed{advice}", argv.join(" "))
        })?;
    stop_if_interrupted()
}

/// Between steps: stop at once after Ctrl-C (the guards then unmount and remove).
fn stop_if_interrupted() -> Result<()> {
    if crate::exec::signals::interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Removes what an image does not need: apt lists and caches, logs, documentation (copyright
/// files are kept), the host's resolv.conf and hostname.
fn trim_rootfs(root: &Path) -> Result<()> {
    empty_dir(&root.join("var/lib/apt/lists"), |_| true)?;
    empty_dir(&root.join("var/cache/apt/archives"), |p| {
        p.extension().is_some_and(|e| e == "deb")
    })?;
    empty_dir(&root.join("var/cache/apt"), |p| {
        p.extension().is_some_and(|e| e == "bin")
    })?;
    empty_dir(&root.join("var/log/apt"), |_| true)?;
    for f in [
        "var/log/dpkg.log",
        "var/log/alternatives.log",
        "var/log/bootstrap.log",
    ] {
        let _ = fs::remove_file(root.join(f));
    }
    empty_dir(&root.join("usr/share/man"), |_| true)?;
    empty_dir(&root.join("usr/share/info"), |_| true)?;
    let doc = root.join("usr/share/doc");
    if let Ok(entries) = fs::read_dir(&doc) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                empty_dir(&p, |f| f.file_name().is_none_or(|n| n != "copyright"))?;
            }
        }
    }
    write_file(&root.join("etc/resolv.conf"), "", 0o644)?;
    write_file(&root.join("etc/hostname"), "localhost\n", 0o644)?;
    Ok(())
}

/// Removes the entries of `dir` that `pick` selects (directories recursively; never following
/// symlinks). A missing `dir` is fine.
fn empty_dir(dir: &Path, pick: impl Fn(&Path) -> bool) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let p = e.path();
        if !pick(&p) {
            continue;
        }
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let res = if is_dir {
            fs::remove_dir_all(&p)
        } else {
            fs::remove_file(&p)
        };
        res.with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// Writes a file (replacing a symlink rather than writing through it) with `mode`.
fn write_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    if path.is_symlink() {
        fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// After `--force`: removes the image the new one replaced, when it is a stand-in and unused.
fn remove_replaced(engine: &Engine, reference: &str, old: &str, progress: &Progress) {
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
            "the replaced image {old} of {reference} was kept ({}); `cargo xtask clean-images` does not touch stand-ins: remove it with `podman rmi {old}` when unused",
            format!("{e:#}").lines().last().map(str::trim).unwrap_or("in use")
        ));
    }
}

/// Unmounts every mount point under `dir` (leftovers of a killed run), then removes it. Refuses
/// to remove a tree that still has something mounted in it.
fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() && !dir.is_symlink() {
        return Ok(());
    }
    for m in mounts_under(&mountinfo(), dir) {
        let _ = Cmd::new("umount").arg(&m).output();
    }
    let left = mounts_under(&mountinfo(), dir);
    if !left.is_empty() {
        let list: Vec<String> = left.iter().map(|p| p.display().to_string()).collect();
        bail!(
            "{} still has file systems mounted ({}); unmount them (`umount -l PATH`) and run again",
            dir.display(),
            list.join(", ")
        );
    }
    fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))
}

fn mountinfo() -> String {
    fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

/// proc mounted in a chroot; unmounted on drop, also when the install failed.
struct ProcMount {
    target: PathBuf,
}

impl ProcMount {
    fn mount(root: &Path) -> Result<ProcMount> {
        let target = root.join("proc");
        fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
        Cmd::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(&target)
            .run()
            .context("mounting proc in the chroot")?;
        Ok(ProcMount { target })
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        let ok = Cmd::new("umount")
            .arg(&self.target)
            .output()
            .is_ok_and(|o| o.success());
        if !ok {
            // Something still runs in the chroot: detach now, the kernel finishes later.
            let _ = Cmd::new("umount").arg("-l").arg(&self.target).output();
        }
    }
}

/// The work tree and tar file of one image; both removed on drop.
struct Work<'a> {
    root: PathBuf,
    tar: PathBuf,
    progress: &'a Progress,
}

impl<'a> Work<'a> {
    fn new(root: PathBuf, tar: PathBuf, progress: &'a Progress) -> Result<Work<'a>> {
        remove_tree(&root)?;
        let _ = fs::remove_file(&tar);
        Ok(Work {
            root,
            tar,
            progress,
        })
    }

    fn remove_root(&self) -> Result<()> {
        remove_tree(&self.root)
    }
}

impl Drop for Work<'_> {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.root) {
            self.progress.println(&format!("warning: {e:#}"));
        }
        let _ = fs::remove_file(&self.tar);
    }
}

/// One `standins` build at a time per workspace (flock, released when the process ends).
struct DirLock {
    _file: fs::File,
}

impl DirLock {
    fn take(path: &Path) -> Result<DirLock> {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own; no memory is involved.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            bail!(
                "another `cargo xtask standins` is building (it holds {}); wait for it to finish, then run again",
                path.display()
            );
        }
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
";

    #[test]
    fn mirror_from_deb822_takes_the_main_suite() {
        assert_eq!(
            mirror_from_deb822(DEB822, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        // Security first in the file: still the main archive.
        let swapped = "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n\n\
                       Types: deb deb-src\nURIs: https://mirror.example/debian/\nSuites: bookworm\n";
        assert_eq!(
            mirror_from_deb822(swapped, "bookworm").as_deref(),
            Some("https://mirror.example/debian")
        );
        // Another release on the host: the first non-security mirror.
        let trixie = "Types: deb\nURIs: http://m.example/debian\nSuites: trixie\n";
        assert_eq!(
            mirror_from_deb822(trixie, "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
        // Source-only, disabled and non-http stanzas are ignored.
        let none = "Types: deb-src\nURIs: http://a/debian\nSuites: bookworm\n\n\
                    Types: deb\nEnabled: no\nURIs: http://b/debian\nSuites: bookworm\n\n\
                    Types: deb\nURIs: file:/srv/debian\nSuites: bookworm\n";
        assert_eq!(mirror_from_deb822(none, "bookworm"), None);
    }

    #[test]
    fn mirror_from_one_line_list() {
        let list = "# comment\ndeb-src http://src.example/debian bookworm main\n\
                    deb [signed-by=/k.gpg arch=amd64] http://sec.example/debian-security bookworm-security main\n\
                    deb http://mirror.example/debian/ bookworm main # trailing\n";
        assert_eq!(
            mirror_from_list(list, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_from_list("deb cdrom:[x]/ bookworm main\n", "bookworm"),
            None
        );
        assert_eq!(
            mirror_from_list("deb http://only.example/debian trixie main\n", "bookworm").as_deref(),
            Some("http://only.example/debian")
        );
    }

    #[test]
    fn find_mirror_falls_back_and_explains() {
        let list = "deb http://list.example/debian bookworm main\n";
        assert_eq!(
            find_mirror(Some(DEB822), Some(list), "bookworm").unwrap(),
            "http://deb.debian.org/debian"
        );
        assert_eq!(
            find_mirror(None, Some(list), "bookworm").unwrap(),
            "http://list.example/debian"
        );
        assert_eq!(
            find_mirror(Some("garbage"), Some(list), "bookworm").unwrap(),
            "http://list.example/debian"
        );
        let err = find_mirror(None, None, "bookworm").unwrap_err().to_string();
        assert!(err.contains("no Debian mirror found"), "{err}");
        assert!(
            err.contains(DEBIAN_SOURCES) && err.contains(SOURCES_LIST),
            "{err}"
        );
        assert!(!err.ends_with('.'), "{err}");
    }

    #[test]
    fn recipes_have_fixed_names_and_packages() {
        let pg = recipe("postgres").unwrap();
        assert_eq!(pg.reference, "localhost/xtask-standin/postgres:15-bookworm");
        assert_eq!(pg.packages(), vec!["postgresql-common", "postgresql-15"]);
        let redis = recipe("redis").unwrap();
        assert_eq!(redis.reference, "localhost/xtask-standin/redis:7-bookworm");
        assert_eq!(redis.packages(), vec!["redis-server"]);
        let rt = recipe("runtime").unwrap();
        assert_eq!(rt.reference, "localhost/xtask-standin/runtime:bookworm");
        assert!(
            rt.packages().is_empty(),
            "ca-certificates comes with the base"
        );
        assert_eq!(BASE_INCLUDE, "ca-certificates");
        assert!(recipe("datastorage").is_none());
        let names: Vec<&str> = RECIPES.iter().map(|r| r.service).collect();
        assert_eq!(
            names,
            crate::config::STANDIN_RECIPES,
            "infra.toml's `standin` accepts exactly the recipes there are"
        );
        for r in RECIPES {
            assert!(r.reference.starts_with("localhost/xtask-standin/"));
            assert_eq!(
                r.entrypoint.is_some(),
                r.config.iter().any(|c| c.starts_with("ENTRYPOINT"))
            );
        }
    }

    #[test]
    fn changes_carry_labels_and_config() {
        let c = recipe("postgres").unwrap().changes("alice", 1_700_000_000);
        for want in [
            "LABEL io.kubernaut.xtask.standin=\"1\"",
            "LABEL io.kubernaut.xtask.owner=\"alice\"",
            "LABEL io.kubernaut.xtask.service=\"postgres\"",
            "LABEL io.kubernaut.xtask.created=\"1700000000\"",
            "LABEL org.opencontainers.image.description=\"stand-in built from Debian packages by cargo xtask standins\"",
            "ENTRYPOINT [\"/usr/local/bin/docker-entrypoint.sh\"]",
            "CMD [\"postgres\"]",
            "EXPOSE 5432",
            "STOPSIGNAL SIGINT",
            "ENV PGDATA=/var/lib/postgresql/data",
        ] {
            assert!(c.iter().any(|x| x == want), "missing {want} in {c:?}");
        }
        assert!(c
            .iter()
            .any(|x| x.starts_with("ENV PATH=") && x.contains("/usr/lib/postgresql/15/bin")));
        assert!(c
            .iter()
            .any(|x| x.starts_with("LABEL org.opencontainers.image.title=")));
        let rt = recipe("runtime").unwrap().changes("bob", 1);
        assert!(rt.contains(&"CMD [\"/bin/bash\"]".to_string()));
        assert!(!rt.iter().any(|x| x.starts_with("ENTRYPOINT")));
        let redis = recipe("redis").unwrap().changes("bob", 1);
        assert!(redis.contains(&"EXPOSE 6379".to_string()));
        assert!(redis.contains(&"LABEL io.kubernaut.xtask.service=\"redis\"".to_string()));
    }

    #[test]
    fn export_lines_are_shell_safe() {
        assert_eq!(
            export_line(
                "XTASK_IMAGE_POSTGRES",
                "localhost/xtask-standin/postgres:15-bookworm"
            ),
            "export XTASK_IMAGE_POSTGRES=localhost/xtask-standin/postgres:15-bookworm"
        );
        assert_eq!(export_line("X", "a b"), "export X='a b'");
    }

    #[test]
    fn main_cluster_is_disabled() {
        let conf = "# comment\n#create_main_cluster = true\nstart_conf = 'auto'\n";
        assert_eq!(
            disable_main_cluster(conf),
            "# comment\ncreate_main_cluster = false\nstart_conf = 'auto'\n"
        );
        assert_eq!(
            disable_main_cluster("create_main_cluster = true"),
            "create_main_cluster = false\n"
        );
        assert_eq!(
            disable_main_cluster("a = 1\n"),
            "a = 1\ncreate_main_cluster = false\n"
        );
    }

    #[test]
    fn mounts_under_a_tree_deepest_first() {
        let info = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
90 30 0:5 / /w/target/work-postgres/proc rw - proc proc rw
91 90 0:6 / /w/target/work-postgres/proc/sys/fs/binfmt_misc rw - binfmt_misc x rw
92 30 0:7 / /w/target/work\\040two/proc rw - proc proc rw
93 30 0:8 / /w/target/work-postgres2/proc rw - proc proc rw
";
        let m = mounts_under(info, Path::new("/w/target/work-postgres"));
        assert_eq!(
            m,
            vec![
                PathBuf::from("/w/target/work-postgres/proc/sys/fs/binfmt_misc"),
                PathBuf::from("/w/target/work-postgres/proc")
            ]
        );
        assert_eq!(
            mounts_under(info, Path::new("/w/target/work two")),
            vec![PathBuf::from("/w/target/work two/proc")]
        );
        assert!(mounts_under(info, Path::new("/elsewhere")).is_empty());
    }

    #[test]
    fn stamp_names_mirror_and_suite() {
        let s = base_stamp("http://m/debian");
        assert!(s.contains("suite=bookworm") && s.contains("mirror=http://m/debian"));
        assert_ne!(s, base_stamp("http://other/debian"));
        assert_eq!(
            crate::cmd::clean_images::human_bytes(231_456_789),
            "231.5 MB"
        );
    }

    #[test]
    fn entrypoints_exec_their_servers() {
        assert!(POSTGRES_ENTRYPOINT.starts_with("#!/bin/bash"));
        assert!(
            POSTGRES_ENTRYPOINT.contains("PostgreSQL init process complete; ready for start up.")
        );
        assert!(
            POSTGRES_ENTRYPOINT.contains("--pwfile=<("),
            "the password goes through a file"
        );
        assert!(POSTGRES_ENTRYPOINT.trim_end().ends_with("exec \"$@\""));
        assert!(REDIS_ENTRYPOINT
            .contains("--bind 0.0.0.0 --protected-mode no --save \"\" --appendonly no"));
        assert!(REDIS_ENTRYPOINT.trim_end().ends_with("exec \"$@\""));
    }
}
