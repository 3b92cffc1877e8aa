//! Stand-in images doing the job of the images they replace: the registry stand-in (Debian's
//! docker-registry) takes a push, reports the pushed digest, and deletes a manifest by digest.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::*;

const REGISTRY_STANDIN: &str = "localhost/xtask-standin/registry:2-bookworm";
/// Both manifest types a push may have stored (podman keeps an image's own format).
const MANIFESTS: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A container of this test, removed by its name on drop (also when the test panics).
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&["rm", "--force", "--time", "0", &self.0]);
    }
}

/// A port nothing listens on now (the kernel's choice).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// One HTTP/1.1 request to 127.0.0.1:`port`: the status and the headers (lowercase names).
fn http(
    port: u16,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(u16, BTreeMap<String, String>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{accept}Connection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers))
}

#[test]
#[ignore = "needs podman and the stand-in images: run by `cargo xtask test`"]
fn registry_stand_in_takes_a_push_and_deletes_by_digest() {
    let image = std::env::var("XTASK_IMAGE_REGISTRY")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| REGISTRY_STANDIN.to_string());
    assert!(
        image_exists(&image),
        "{image} is not here; build it with `sudo -E cargo xtask standins`"
    );
    if image == REGISTRY_STANDIN {
        let labels = image_labels(&image);
        assert_eq!(labels["io.kubernaut.xtask.standin"], "1");
        assert_eq!(labels[SERVICE], "registry");
    }

    let port = free_port();
    let name = Container(format!("xtask-test-registry-{}", hex8()));
    let publish = format!("127.0.0.1:{port}:5000");
    let decoy = format!("{DECOY}=1");
    engine_ok(&[
        "run", "-d", "--name", &name.0, "--label", &decoy, "-p", &publish, &image,
    ]);
    wait_for("the registry's /v2/", Duration::from_secs(20), || {
        http(port, "GET", "/v2/", None)
            .ok()
            .filter(|(status, _)| *status == 200)
    });
    if image == REGISTRY_STANDIN {
        let top = engine_ok(&["top", &name.0, "pid", "args"]);
        assert!(
            top.lines()
                .any(|l| l.trim_start().starts_with("1 ") && l.contains("docker-registry serve")),
            "the registry is not PID 1:\n{top}"
        );
    }

    // Push a tiny image of ours; the registry reports the digest podman pushed.
    let mut decoys = Decoys::new();
    let pushed = decoys.image("registry-push", &[]);
    let tag = hex8();
    let dest = format!("127.0.0.1:{port}/xtask-test/pushed:{tag}");
    let dir = TempDir::new("registry-push");
    let digest_file = dir.path().join("digest");
    let digest_arg = digest_file.display().to_string();
    engine_ok(&[
        "push",
        "--tls-verify=false",
        "--digestfile",
        &digest_arg,
        &pushed,
        &dest,
    ]);
    let digest = std::fs::read_to_string(&digest_file).unwrap();
    let digest = digest.trim();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let by_tag = format!("/v2/xtask-test/pushed/manifests/{tag}");
    let (status, headers) = http(port, "HEAD", &by_tag, Some(MANIFESTS)).unwrap();
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(headers["docker-content-digest"], digest);

    // Deletes are enabled: the manifest goes by digest.
    let by_digest = format!("/v2/xtask-test/pushed/manifests/{digest}");
    let (status, headers) = http(port, "DELETE", &by_digest, None).unwrap();
    assert_eq!(status, 202, "{headers:?}");
    let (status, _) = http(port, "HEAD", &by_digest, Some(MANIFESTS)).unwrap();
    assert_eq!(
        status, 404,
        "the manifest is still there after its deletion"
    );
}
