//! Tests of the engine layer: argv builders and parsing of `inspect` output.

use super::*;
use crate::host::tools::Tool;

fn docker() -> Engine {
    Engine {
        tool: Tool::Docker,
        program: "docker".into(),
    }
}

fn podman() -> Engine {
    Engine {
        tool: Tool::Podman,
        program: "podman".into(),
    }
}

#[test]
fn run_args_are_an_argv() {
    let spec = ContainerSpec {
        name: "notification_postgres_test".into(),
        image: "localhost/pg:15".into(),
        network: "notification_test_network".into(),
        labels: [("io.kubernaut.xtask.run".to_string(), "ab".to_string())].into(),
        env: [("POSTGRES_PASSWORD".to_string(), "a b;$(x)".to_string())].into(),
        publish: vec![(15440, 5432)],
        args: vec!["-c".into(), "fsync=off".into()],
        ..ContainerSpec::default()
    };
    assert_eq!(
        podman().run_args(&spec),
        [
            "run",
            "-d",
            "--pull=never",
            "--name",
            "notification_postgres_test",
            "--network",
            "notification_test_network",
            "--label",
            "io.kubernaut.xtask.run=ab",
            "--env",
            "POSTGRES_PASSWORD",
            "--publish",
            "15440:5432",
            "localhost/pg:15",
            "-c",
            "fsync=off",
        ]
    );
    // The password is in the engine's environment, not on its argv.
    let cmd = podman().run_cmd(&spec);
    assert!(!cmd.to_string().contains("a b;$(x)"), "{cmd}");
    assert_eq!(
        cmd.env_vars(),
        [("POSTGRES_PASSWORD".to_string(), "a b;$(x)".to_string())]
    );
}

/// `command` replaces the entrypoint (docker takes one word; the rest goes before `args`);
/// mounts are read-only.
#[test]
fn command_and_mounts_are_argv() {
    let spec = ContainerSpec {
        name: "c".into(),
        image: "localhost/mock:1".into(),
        network: "n".into(),
        command: vec!["python3".into(), "/srv/mock.py".into()],
        args: vec!["--port".into(), "8080".into()],
        mounts: vec![("/repo/mocks/r.json".into(), "/etc/mock/r.json".into())],
        ..ContainerSpec::default()
    };
    let a = podman().run_args(&spec);
    let tail = &a[a.iter().position(|x| x == "--volume").unwrap()..];
    assert_eq!(
        tail,
        [
            "--volume",
            "/repo/mocks/r.json:/etc/mock/r.json:ro",
            "--entrypoint",
            "python3",
            "localhost/mock:1",
            "/srv/mock.py",
            "--port",
            "8080"
        ]
    );
}

#[test]
fn podman_builds_never_pull() {
    let spec = BuildSpec {
        reference: "localhost/datastorage:notification-1884d074".into(),
        dockerfile: "services/datastorage/Dockerfile".into(),
        context: "target/xtask/ctx".into(),
        labels: BTreeMap::new(),
        build_args: [("BASE_IMAGE".to_string(), "localhost/runtime:1".to_string())].into(),
        tags: Vec::new(),
    };
    let a = build_args_with(&podman().builder(), None, &spec);
    assert!(a.contains(&"--pull=never".to_string()));
    assert!(
        a.contains(&"--layers=false".to_string()),
        "no labelled intermediate images"
    );
    assert_eq!(a.last().unwrap(), "target/xtask/ctx");
    let buildkit = Builder::BuildKit {
        how: "buildx plugin",
    };
    assert!(!build_args_with(&buildkit, None, &spec)
        .iter()
        .any(|x| x.starts_with("--pull") || x.starts_with("--layers")));
    let legacy = build_args_with(&Builder::Legacy { why: "test".into() }, None, &spec);
    assert_eq!(legacy[..2], ["build", "--force-rm"]);
    // A daemon without a default bridge: `RUN` steps (mocks/Dockerfile's apt-get) on the host's.
    let legacy = build_args_with(&Builder::Legacy { why: "test".into() }, Some("host"), &spec);
    assert_eq!(legacy[..4], ["build", "--force-rm", "--network", "host"]);
}

#[test]
fn docker_containers_reach_the_host_by_the_podman_name_too() {
    let spec = ContainerSpec {
        name: "c".into(),
        image: "localhost/i:1".into(),
        network: "n".into(),
        ..ContainerSpec::default()
    };
    let a = docker().run_args(&spec);
    let joined = a.join(" ");
    assert!(
        joined.contains("--add-host host.containers.internal:host-gateway")
            && joined.contains("--add-host host.docker.internal:host-gateway")
            && joined.contains("--pull=never"),
        "{joined}"
    );
    assert!(!podman().run_args(&spec).join(" ").contains("--add-host"));
}

#[test]
fn docker_sizes_are_read_from_text() {
    assert_eq!(parse_human_size("657.3MB"), Some(657_300_000));
    assert_eq!(parse_human_size("536.2MB (81%)"), Some(536_200_000));
    assert_eq!(parse_human_size("0B"), Some(0));
    assert_eq!(parse_human_size("1.234kB"), Some(1234));
    assert_eq!(parse_human_size("2.01GB"), Some(2_010_000_000));
    assert_eq!(parse_human_size("12 MiB?"), None);
    assert_eq!(parse_human_size(""), None);
}

#[test]
fn parses_podman_and_docker_inspect() {
    let podman_c: Value = serde_json::json!({
        "Id": "abc", "Name": "n1", "State": {"Running": true, "Status": "running"},
        "Config": {"Labels": {"io.kubernaut.xtask.run": "r1"}},
        "HostConfig": {"PortBindings": {"5432/tcp": [{"HostIp": "", "HostPort": "15440"}]}},
        "ImageName": "localhost/pg:1"
    });
    let c = parse_container(&podman_c);
    assert_eq!(
        (c.name.as_str(), c.running, c.host_ports.clone()),
        ("n1", true, vec![15440])
    );
    assert_eq!(c.labels["io.kubernaut.xtask.run"], "r1");
    assert_eq!(c.image, "localhost/pg:1");
    let docker_c: Value = serde_json::json!({"Id": "d", "Name": "/n2", "State": {"Running": false, "Status": "exited"},
        "Config": {"Labels": null, "Image": "localhost/redis:7"}, "Image": "sha256:f663acb2a84b"});
    let c = parse_container(&docker_c);
    assert_eq!(c.name, "n2");
    assert!(c.labels.is_empty());
    assert_eq!(
        c.image, "localhost/redis:7",
        "the reference, not docker's id"
    );
    let img: Value = serde_json::json!({"Id": "sha256:ff", "RepoTags": ["localhost/a:b"], "Size": 10,
        "Labels": {"io.kubernaut.xtask.created": "1700000000"}});
    let i = parse_image(&img);
    assert_eq!(
        (i.id.as_str(), i.size, i.created),
        ("ff", 10, 1_700_000_000)
    );
}

#[test]
fn one_inspect_tells_which_references_exist() {
    let refs: Vec<String> = [
        "docker.io/library/redis:7",
        "localhost/standin/redis:7",
        "redis:7",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // podman 4.3
    let podman_err = "error inspecting object: docker.io/library/redis:7: image not known\n\
                      Error: inspecting object: redis:7: image not known\n";
    let found = parse::existing(&refs, "4ddd756e34e1\n", podman_err).unwrap();
    assert_eq!(
        found.values().copied().collect::<Vec<_>>(),
        [false, true, false]
    );
    // docker 20.10
    let docker_err =
        "Error: No such image: docker.io/library/redis:7\nError: No such image: redis:7\n";
    assert_eq!(
        parse::existing(&refs, "sha256:4ddd\n", docker_err).unwrap(),
        found
    );
    // A longer name that is missing says nothing of a shorter one inside it.
    let only_long = "Error: inspecting object: docker.io/library/redis:7: image not known\n";
    let found = parse::existing(&refs, "a\nb\n", only_long).unwrap();
    assert_eq!(
        found.values().copied().collect::<Vec<_>>(),
        [false, true, true]
    );
    // Wording that names nothing: the ids do not add up, so no answer.
    assert_eq!(
        parse::existing(&refs, "sha256:4ddd\n", "Error: 2 images missing\n"),
        None
    );
    let all = parse::existing(&refs, "a\nb\nc\n", "").unwrap();
    assert!(all.values().all(|e| *e));
}
