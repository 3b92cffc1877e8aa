//! The root file systems of the stand-ins: one cached `debootstrap --variant=minbase` base,
//! copied per image, packages installed with `apt-get` in a chroot (proc mounted for that time
//! only, services kept from starting), the recipe's files written, then trimmed and packed.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::guards::{remove_tree, ProcMount};
use super::recipes::{Recipe, BASE_INCLUDE, ENTRYPOINT, SUITE};
use crate::exec::process::Cmd;
use crate::exec::progress::{Line, Progress};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Keeps package scripts from starting services (redis-server, postgresql) inside the chroot.
const POLICY_RC_D: &str =
    "#!/bin/sh\n# cargo xtask standins: start no services while packages are installed\nexit 101\n";
/// Long steps (debootstrap, apt, tar) are stopped after this; none of them touches the engine.
const STEP_LIMIT: Duration = Duration::from_secs(20 * 60);

/// What the base rootfs was made from; a cached base with another stamp is made again.
pub fn base_stamp(mirror: &str) -> String {
    format!("suite={SUITE}\nvariant=minbase\ninclude={BASE_INCLUDE}\nmirror={mirror}\n")
}

/// The cached base rootfs in `dir` (debootstrap once; again with `force` or when the mirror
/// changed). `lines` show the debootstrap's progress.
pub fn ensure_base(
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
    if let Err(e) = debootstrap(&tmp, mirror, lines) {
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

fn debootstrap(target: &Path, mirror: &str, lines: &[Arc<Line>]) -> Result<()> {
    for l in lines {
        l.state(
            "debootstrap",
            &format!("shared base rootfs ({SUITE} minbase) from {mirror}"),
        );
    }
    let watchers: Vec<Arc<Line>> = lines.to_vec();
    Cmd::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={BASE_INCLUDE}"))
        .arg(SUITE)
        .arg(target)
        .arg(mirror)
        .env("LC_ALL", "C")
        .env_remove("LANGUAGE")
        .timeout(Duration::from_secs(30 * 60))
        .run_streaming(move |l| {
            for w in &watchers {
                w.detail(l);
            }
        })
        .map(|_| ())
}

/// The image's tree: a copy of the base with the recipe's packages and files, trimmed.
pub fn make(r: &Recipe, base: &Path, root: &Path, line: &Arc<Line>) -> Result<()> {
    line.state("copying", "the base rootfs");
    Cmd::new("cp")
        .args(["-a", "--reflink=auto"])
        .arg(base)
        .arg(root)
        .run()?;
    stop_if_interrupted()?;
    if !r.rounds.is_empty() {
        install_packages(r, root, line)?;
    }
    write_recipe_files(r, root)?;
    line.state("cleaning", "apt lists, caches, documentation");
    trim_rootfs(root)
}

/// `tar` of the tree (numeric owners, one file system) into `tar`.
pub fn pack(root: &Path, tar: &Path, line: &Line) -> Result<()> {
    line.state("packing", "tar of the rootfs");
    Cmd::new("tar")
        .args(["--numeric-owner", "--one-file-system", "-C"])
        .arg(root)
        .arg("-cf")
        .arg(tar)
        .arg(".")
        .timeout(STEP_LIMIT)
        .run()
        .context("packing the rootfs failed; check free disk space under target/")?;
    Ok(())
}

/// The entrypoint (0755) and the recipe's further files (0644).
fn write_recipe_files(r: &Recipe, root: &Path) -> Result<()> {
    let in_root = |p: &str| root.join(p.trim_start_matches('/'));
    if let Some(text) = r.entrypoint {
        write_file(&in_root(ENTRYPOINT), text, 0o755)?;
    }
    for (path, text) in r.files {
        write_file(&in_root(path), text, 0o644)?;
    }
    Ok(())
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
            install_round(root, round, line)?;
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

/// One `apt-get install` round; after postgresql-common, no main cluster of its own.
fn install_round(root: &Path, packages: &[&str], line: &Arc<Line>) -> Result<()> {
    line.state("installing", &packages.join(" "));
    let mut argv = vec!["apt-get", "install", "-y", "--no-install-recommends"];
    argv.extend_from_slice(packages);
    chroot(root, &argv, line)?;
    let cc = root.join("etc/postgresql-common/createcluster.conf");
    if let Ok(text) = fs::read_to_string(&cc) {
        fs::write(&cc, disable_main_cluster(&text))
            .with_context(|| format!("writing {}", cc.display()))?;
    }
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
        .timeout(STEP_LIMIT)
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
pub fn stop_if_interrupted() -> Result<()> {
    if crate::exec::signals::interrupted() {
        bail!("interrupted");
    }
    Ok(())
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

/// Removes what an image does not need: apt lists and caches, logs, documentation (copyright
/// files are kept), the host's resolv.conf and hostname.
fn trim_rootfs(root: &Path) -> Result<()> {
    let is = |ext: &'static str| move |p: &Path| p.extension().is_some_and(|e| e == ext);
    empty_dir(&root.join("var/lib/apt/lists"), |_| true)?;
    empty_dir(&root.join("var/cache/apt/archives"), is("deb"))?;
    empty_dir(&root.join("var/cache/apt"), is("bin"))?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn stamp_names_mirror_and_suite() {
        let s = base_stamp("http://m/debian");
        assert!(s.contains("suite=bookworm") && s.contains("mirror=http://m/debian"));
        assert_ne!(s, base_stamp("http://other/debian"));
        assert_eq!(crate::host::disk::human_bytes(231_456_789), "231.5 MB");
    }

    #[test]
    fn recipe_files_land_in_the_tree_with_their_modes() {
        let dir = std::env::temp_dir().join(format!("xtask-standin-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let r = super::super::recipes::recipe("registry").unwrap();
        write_recipe_files(&r, &dir).unwrap();
        let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("usr/local/bin/docker-entrypoint.sh"), 0o755);
        assert_eq!(mode("etc/docker/registry/config.yml"), 0o644);
        let conf = fs::read_to_string(dir.join("etc/docker/registry/config.yml")).unwrap();
        assert!(conf.contains("rootdirectory: /var/lib/registry"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
