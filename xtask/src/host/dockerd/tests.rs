//! Tests of the private dockerd's layout, argv and mount handling (no daemon started).

use super::*;

#[test]
fn sockets_go_to_a_short_folder_when_the_build_folder_is_deep() {
    let short = Layout::new(Path::new("/w/target/xtask/dockerd"), Path::new("/tmp"));
    assert_eq!(short.run, Path::new("/w/target/xtask/dockerd/run"));
    assert_eq!(short.host(), "unix:///w/target/xtask/dockerd/run/sock");
    let deep = Path::new(
        "/home/someone/a/rather/long/path/to/a/checkout/of/this/repository/target/xtask/dockerd",
    );
    let long = Layout::new(deep, Path::new("/tmp"));
    assert!(
        long.run
            .to_string_lossy()
            .starts_with("/tmp/xtask-dockerd-"),
        "{:?}",
        long.run
    );
    assert_eq!(
        long,
        Layout::new(deep, Path::new("/tmp")),
        "the same folder each time"
    );
    assert!(long.run.join(CONTAINERD_SOCKET).as_os_str().len() <= SOCKET_ROOM);
}

#[test]
fn the_daemon_is_private_and_leaves_the_host_network_alone() {
    let l = Layout::new(Path::new("/w/d"), Path::new("/tmp"));
    let a = l.args(Some("192.0.2.2".parse().unwrap())).join(" ");
    for want in [
        "--config-file /w/d/daemon.json",
        "--data-root /w/d/data",
        "--exec-root /w/d/run/exec",
        "--pidfile /w/d/run/pid",
        "--host unix:///w/d/run/sock",
        "--containerd-namespace xtask-",
        "--bridge none",
        "--iptables=false",
        "--ip-forward=false",
        "--ip-masq=false",
        "--host-gateway-ip 192.0.2.2",
    ] {
        assert!(a.contains(want), "{want} missing from {a}");
    }
    assert!(!l.args(None).join(" ").contains("--host-gateway-ip"));
    let other = Layout::new(Path::new("/w2/d"), Path::new("/tmp"));
    assert_ne!(l.namespace(), other.namespace(), "one namespace per folder");
    let config: serde_json::Value = serde_json::from_str(&l.config_text()).unwrap();
    assert_eq!(config["deprecated-key-path"], "/w/d/key.json");
}

#[test]
fn mounts_under_our_folders_deepest_first() {
    let info = "\
36 35 98:0 / / rw - ext4 /dev/root rw
40 36 0:50 / /w/d/data rw - ext4 /dev/root rw
41 40 0:51 / /w/d/data/overlay2/abc/merged rw - overlay overlay rw
42 36 0:4 net:[4026532] /w/d/run/exec/netns/x rw - nsfs nsfs rw
43 36 0:52 / /w/other rw - tmpfs tmpfs rw
44 36 0:53 / /w/d\\040x rw - tmpfs tmpfs rw
";
    let got = mounts_under(info, &[Path::new("/w/d"), Path::new("/w/d/run")]);
    assert_eq!(
        got,
        [
            PathBuf::from("/w/d/run/exec/netns/x"),
            PathBuf::from("/w/d/data/overlay2/abc/merged"),
            PathBuf::from("/w/d/data"),
        ]
    );
    assert_eq!(unescape_mountinfo("/a\\040b\\134c"), "/a b\\c");
    assert_eq!(unescape_mountinfo("/trailing\\"), "/trailing\\");
}

/// Start, crash (SIGKILL) with a network up, start again (which clears what the crash left),
/// stop: nothing of it may be left, no mount and no folder.
#[test]
#[ignore = "starts a dockerd (Debian's docker.io): run by `cargo xtask test`"]
fn a_crashed_daemon_is_cleared_by_the_next_start_and_stop_leaves_nothing() {
    let tmp = std::env::temp_dir();
    let base = tmp.join(format!("xtask-dockerd-test-{}", std::process::id()));
    let layout = Layout::new(&base, &tmp);
    let said = std::sync::Mutex::new(Vec::new());
    let say = |s: &str| said.lock().unwrap().push(s.to_string());
    let docker = |d: &Dockerd, args: &[&str]| {
        d.engine()
            .unwrap()
            .cmd()
            .args(args)
            .envs(d.env())
            .run()
            .unwrap();
    };
    let d = Dockerd::start(layout.clone(), &say).unwrap();
    let bridges = || {
        fs::read_dir("/sys/class/net")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("br-"))
            .collect::<std::collections::BTreeSet<_>>()
    };
    let before = bridges();
    let label = format!("{}=dockerd-test", crate::plan::labels::RUN);
    docker(
        &d,
        &["network", "create", "--label", &label, "xtask-dockerd-test"],
    );
    let ours: Vec<String> = bridges().difference(&before).cloned().collect();
    assert_eq!(ours.len(), 1, "one bridge for the network: {ours:?}");
    let pid = d.pid;
    d.crash();
    assert!(gone(pid));
    let info = || fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts_under(&info(), &[&layout.base, &layout.run]).is_empty(),
        "a crash leaves mounts (else this test shows nothing)"
    );
    let d = Dockerd::start(layout.clone(), &say).unwrap();
    assert!(
        said.lock()
            .unwrap()
            .iter()
            .any(|s| s.contains("clearing what an earlier")),
        "{said:?}"
    );
    docker(&d, &["version"]);
    let left = d.stop().unwrap();
    assert!(left.is_empty(), "{left}");
    assert!(
        !bridges().contains(&ours[0]),
        "the network's bridge {} outlived the daemon",
        ours[0]
    );
    assert!(mounts_under(&info(), &[&layout.base, &layout.run]).is_empty());
    assert!(!layout.run.exists() && !layout.base.join("data").exists());
    assert!(gone(pid));
    fs::remove_dir_all(&base).unwrap();
}
