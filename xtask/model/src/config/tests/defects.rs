//! The defects of issue 9 that lived in config, each with a test that failed before its fix
//! (a 200-character name passed, a non-UTF-8 byte was "cannot read", a bad port gave a second
//! error, a huge duration overflowed), and inputs that must never panic.

use std::path::Path;
use std::time::Duration;

use super::*;

/// Issue 9: a bad host port gave a second, wrong error ("no host port for ...").
#[test]
fn a_bad_port_is_one_error() {
    for bad in ["0", "-1", "70000", "99999999999"] {
        one_error(
            &variant("redis = 16385", &format!("redis = {bad}")),
            &format!("consumers.notify.integration.ports.redis: port {bad} is outside 1-65535"),
        );
        one_error(
            &variant("host_port = 28121", &format!("host_port = {bad}")),
            &format!("consumers.notify.e2e.ports.store.host_port: port {bad} is outside 1-65535"),
        );
        one_error(
            &variant("port = 6379", &format!("port = {bad}")),
            &format!("infra.redis.port: port {bad} is outside 1-65535"),
        );
    }
    one_error(
        &variant("node_port = 30081", "node_port = 1"),
        "consumers.notify.e2e.ports.store.node_port: 1 is outside Kubernetes' NodePort range",
    );
}

/// Issue 9: a 200-character component name passed `check`.
#[test]
fn every_name_limit_is_enforced_and_named() {
    let long = "a".repeat(200);
    let e = errors(&format!(
        "{GOOD}\n[infra.{long}]\nimage = \"redis\"\nport = 6379\nready = {{ kind = \"redis\" }}\n"
    ));
    assert!(
        e.contains("component name `aaaaaaaaaaaaaaaaaaaa...` is 200 characters; it becomes a Kubernetes object name (at most 63)"),
        "{e}"
    );
    let long_consumer = format!(
        "{GOOD}\n[consumers.{}.integration]\ntest = [\"x\"]\n",
        "c".repeat(33)
    );
    let e = errors(&long_consumer);
    assert!(e.contains("consumer name `cccccccccccccccccccc...` is 33 characters; the kind cluster name `{consumer}-e2e-{run id}` would have 50 (at most 49: kind adds `-control-plane` for its node's hostname, a DNS label), so a consumer name has at most 32"), "{e}");
    let e = errors(
        &GOOD
            .replace("[images.redis]", &format!("[images.{}]", "r".repeat(64)))
            .replace(
                "image = \"redis\"",
                &format!("image = \"{}\"", "r".repeat(64)),
            ),
    );
    assert!(
        e.contains("image name `rrrrrrrrrrrrrrrrrrrr...` is 64 characters"),
        "{e}"
    );
}

/// Issue 9: a non-UTF-8 byte was "cannot read ...; run from the repository".
#[test]
fn a_non_utf8_byte_is_located() {
    let mut bytes = b"[postgres]\nuser = \"ab".to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(b"\"\n");
    let d = decode(Path::new("infra.toml"), &bytes)
        .unwrap_err()
        .to_string();
    assert!(
        d.contains("infra.toml:2:11: the file must be UTF-8 (byte 0xff is not)"),
        "{d}"
    );
    let dir = std::env::temp_dir().join(format!("xtask-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("infra.toml");
    std::fs::write(&file, &bytes).unwrap();
    let e = format!("{:#}", Config::load(&file).unwrap_err());
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(e.contains(":2:11: the file must be UTF-8"), "{e}");
    assert!(!e.contains("run from the repository"), "{e}");
}

#[test]
fn garbage_never_panics() {
    let cases = [
        "",
        "[",
        "]]]",
        "x = ",
        "[services]\nfoo = 1",
        "[consumers.a]\nintegration = 3",
        "[infra.a]\nport = -1",
        "[infra.a]\nport = 99999999999999999999999",
        "[infra.a]\nport = -9223372036854775808\ntimeout = \"18446744073709551616s\"",
        "[jobs.a]\ntimeout = \"99999999999999999999999999d\"",
        "\u{0}\u{1}",
        "[postgres]\nuser = []",
        "[consumers.x.e2e]\ny = { node_port = 1 }",
        "[consumers.x.e2e.ports]\ny = { node_port = 9223372036854775807, host_port = -1 }",
        "[consumers.x.integration]\ntest = 3\nadd = [1]",
        "[consumers.x.integration.override.y]\nport = 99999999999999",
        "[services.é]\n\"ü\" = \"ß\"",
        "[[services]]",
    ];
    for c in cases {
        let _ = parse_str(c);
    }
    // Every prefix of a valid file (cut anywhere) and every byte made invalid UTF-8.
    for (i, _) in GOOD.char_indices() {
        let _ = parse_str(&GOOD[..i]);
    }
    for i in (0..GOOD.len()).step_by(7) {
        let mut b = GOOD.as_bytes().to_vec();
        b[i] = 0xc3;
        if let Ok(t) = decode(Path::new("f"), &b) {
            let _ = parse_str(t);
        }
    }
    // An empty file lacks [postgres] but parses.
    assert!(errors("").contains("missing [postgres]"));
}

#[test]
fn durations_and_line_columns() {
    assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
    assert_eq!(
        parse_duration("7d").unwrap(),
        Duration::from_secs(7 * 86400)
    );
    assert_eq!(
        parse_duration("1500ms").unwrap(),
        Duration::from_millis(1500)
    );
    assert!(parse_duration("3w")
        .unwrap_err()
        .to_string()
        .contains("unknown unit"));
    assert!(parse_duration("s")
        .unwrap_err()
        .to_string()
        .contains("not a duration"));
    assert!(parse_duration("-1s")
        .unwrap_err()
        .to_string()
        .contains("not a duration"));
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("ab", 99), (1, 3));
    assert_eq!(line_col("é", 1), (1, 1), "inside a character: no panic");
}

/// Issue 9: `300000000000000d` overflowed (a panic in debug builds) instead of an error.
#[test]
fn huge_durations_are_too_large_not_a_panic() {
    for s in [
        "300000000000000d",
        "99999999999999999999s",
        "18446744073709551615ms",
        "36501d",
    ] {
        let e = parse_duration(s).unwrap_err().to_string();
        assert!(e.contains("too large"), "{s}: {e}");
    }
    assert_eq!(
        parse_duration("36500d").unwrap(),
        Duration::from_secs(36500 * 86400)
    );
}
