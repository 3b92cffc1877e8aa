//! Tests of the process layer: capture, streaming, time limits, uninterruptible commands, and
//! that the types forbid a time limit on an uninterruptible command.

use super::*;

#[test]
fn captures_output_and_status() {
    let out = Cmd::new("cat").stdin("hello\nworld\n").output().unwrap();
    assert!(out.success());
    assert_eq!(out.stdout, "hello\nworld\n");
    let err = Cmd::new("false").run().unwrap_err().to_string();
    assert!(err.contains("`false` failed (exit status 1)"), "{err}");
}

#[test]
fn missing_program_points_to_doctor() {
    let err = Cmd::new("surely-not-a-program-xyz")
        .run()
        .unwrap_err()
        .to_string();
    assert!(err.contains("not found in PATH"), "{err}");
    assert!(err.contains("cargo xtask doctor"), "{err}");
}

#[test]
fn streams_lines_to_callback() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    Cmd::new("cat")
        .stdin("a\nb\r c\n")
        .run_streaming(move |l| s.lock().unwrap().push(l.to_string()))
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), vec!["a", "b", " c"]);
}

#[test]
fn uninterruptible_commands_are_not_registered_and_still_report() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let out = Cmd::new("cat")
        .stdin("one\ntwo\n")
        .uninterruptible()
        .run_streaming(move |l| s.lock().unwrap().push(l.to_string()))
        .unwrap();
    assert_eq!(out.stdout, "one\ntwo\n");
    assert_eq!(*seen.lock().unwrap(), vec!["one", "two"]);
    let err = Cmd::new("ls")
        .arg("/surely/not/here")
        .uninterruptible()
        .run()
        .unwrap_err()
        .to_string();
    assert!(err.contains("No such file"), "{err}");
}

#[test]
fn timeout_stops_the_child() {
    let t = Instant::now();
    let err = Cmd::new("sleep")
        .arg("5")
        .timeout(Duration::from_millis(200))
        .output()
        .unwrap_err();
    assert!(err.to_string().contains("did not finish within"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn display_quotes_for_a_shell() {
    let c = Cmd::new("podman").args(["run", "--env", "A=b c", "it's"]);
    assert_eq!(c.to_string(), r"podman run --env 'A=b c' 'it'\''s'");
    assert_eq!(c.argv()[3], "A=b c");
}

#[test]
fn env_is_passed_and_listed() {
    let c = Cmd::new("printenv").arg("XTASK_T").env("XTASK_T", "v1");
    assert_eq!(c.read().unwrap(), "v1");
    assert_eq!(
        c.env_vars(),
        vec![("XTASK_T".to_string(), "v1".to_string())]
    );
}

#[test]
fn finds_programs_in_path() {
    let dir = std::env::temp_dir().join(format!("xtask-path-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("kind");
    std::fs::write(&exe, "#!/bin/true\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(find_in_path("kind", Some(dir.as_os_str())), Some(exe));
    assert_eq!(find_in_path("kubectl", Some(dir.as_os_str())), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn own_pid_is_alive() {
    assert!(pid_alive(std::process::id()));
    assert!(!pid_alive(0));
}

/// An executable script in a fresh folder (tests need stderr and grandchildren; the xtask
/// itself never runs a shell).
fn script(name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("xtask-proc-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn streaming_honours_the_time_limit_and_keeps_stderr_order() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let t = Instant::now();
    let err = Cmd::new(script("chatty", "echo one; echo two >&2; exec sleep 5"))
        .timeout(Duration::from_millis(300))
        .run_streaming(move |l| s.lock().unwrap().push(l.to_string()))
        .unwrap_err();
    assert!(err.to_string().contains("did not finish within"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(*seen.lock().unwrap(), vec!["one", "two"]);
}

#[test]
fn a_killed_group_takes_its_grandchildren() {
    // The grandchild keeps the pipe open: killing only the child would hang the reader.
    let t = Instant::now();
    let err = Cmd::new(script("forks", "sleep 5 & sleep 5; wait"))
        .timeout(Duration::from_millis(200))
        .output()
        .unwrap_err();
    assert!(err.to_string().contains("did not finish within"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn quick_reads() {
    let hi = quick::first_line(Path::new("printf"), &["\n  hi \nthere\n"]);
    assert_eq!(hi.as_deref(), Some("hi"));
    assert_eq!(
        quick::first_line(Path::new("surely-not-a-program-xyz"), &[]),
        None
    );
    let dir = std::env::temp_dir().join(format!("xtask-nogit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert_eq!(quick::git_head(&dir), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `Cmd::uninterruptible().timeout(..)` must not compile: a time limit kills the group, which an
/// uninterruptible command must never be. Both methods exist only for modes implementing
/// [`Undecided`]; this probe (autoref specialisation) fails the moment another mode does.
#[test]
fn an_uninterruptible_command_cannot_have_a_time_limit() {
    struct Probe<T>(std::marker::PhantomData<T>);
    trait Fallback {
        fn undecided(&self) -> bool {
            false
        }
    }
    impl<T> Fallback for Probe<T> {}
    impl<T: Undecided> Probe<T> {
        fn undecided(&self) -> bool {
            true
        }
    }
    assert!(Probe::<Plain>(std::marker::PhantomData).undecided());
    assert!(!Probe::<Uninterruptible>(std::marker::PhantomData).undecided());
    assert!(!Probe::<Timed>(std::marker::PhantomData).undecided());
    let _: Cmd<Timed> = Cmd::new("true").timeout(Duration::from_secs(1));
    let _: Cmd<Uninterruptible> = Cmd::new("true").uninterruptible();
}

/// The pid under which `script` runs, once it is registered for `terminate_all`.
fn registered(script: &Path) -> u32 {
    let t = Instant::now();
    loop {
        let pids: Vec<u32> = CHILDREN.lock().unwrap().keys().copied().collect();
        let mine = pids.into_iter().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&*script.to_string_lossy()))
        });
        if let Some(p) = mine {
            return p;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "never registered");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ctrl-C: a child that cleans up after itself (it ignores SIGTERM here and ends on its own
/// after a second) gets its own grace; any other is killed once the common grace is over.
#[test]
fn a_child_that_cleans_up_gets_its_own_grace() {
    for (name, grace, finished) in [
        ("tidy", Some(Duration::from_secs(10)), true),
        ("rude", None, false),
    ] {
        let s = script(name, "trap '' TERM; sleep 1; exit 0");
        let mut cmd = Cmd::new(&s);
        if let Some(g) = grace {
            cmd = cmd.cleans_up(g);
        }
        let child = std::thread::spawn(move || cmd.run_inherit().unwrap());
        let pid = registered(&s);
        let only_it = || {
            let c = CHILDREN.lock().unwrap();
            c.iter()
                .filter(|(p, _)| **p == pid)
                .map(|(p, g)| (*p, *g))
                .collect()
        };
        stop(only_it, Duration::from_millis(100));
        let status = child.join().unwrap();
        assert_eq!(status.success(), finished, "{name}: {status:?}");
    }
}
