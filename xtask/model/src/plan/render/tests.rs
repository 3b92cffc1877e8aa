//! Rendering tests: the repository's templates render, for every consumer, into manifests that
//! parse as real Kubernetes objects and survive a round trip unchanged (so a misspelt field,
//! which the typed object would drop, fails here), and the Phase 0 image check catches every
//! kind of wrong reference.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::{apps::v1::Deployment, batch::v1::Job, core::v1 as core};
use serde_json::Value;

use super::*;
use crate::config::TierName;
use crate::plan::stack::tests::{read_repo, repo_config, Edit, RepoFiles};

/// Parses a document as its Kubernetes type and checks nothing was dropped or changed.
fn as_kubernetes_object(doc: &Yaml) -> std::result::Result<String, String> {
    let v = to_json(doc);
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    fn round<T: serde::de::DeserializeOwned + serde::Serialize>(
        v: &Value,
    ) -> std::result::Result<Value, String> {
        let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        serde_json::to_value(typed).map_err(|e| e.to_string())
    }
    let back = match kind.as_str() {
        "Deployment" => round::<Deployment>(&v),
        "Job" => round::<Job>(&v),
        "Service" => round::<core::Service>(&v),
        "Secret" => round::<core::Secret>(&v),
        "Namespace" => round::<core::Namespace>(&v),
        "ConfigMap" => round::<core::ConfigMap>(&v),
        other => return Err(format!("unexpected kind {other}")),
    }?;
    if back != v {
        return Err(format!(
            "{kind} changed in a round trip (a field is misspelt or misplaced):\n{}\nvs\n{}",
            v, back
        ));
    }
    Ok(kind)
}

fn e2e_stack(config: &Config, consumer: &str) -> Stack {
    config.stack(consumer, TierName::E2e).unwrap()
}

fn images_for(config: &Config, consumer: &str) -> BTreeMap<String, String> {
    e2e_stack(config, consumer)
        .members
        .iter()
        .map(|m| {
            let svc = m.image_service().unwrap_or(&m.name).to_string();
            let r = format!("localhost/{svc}:{consumer}-1884d074");
            (m.name.clone(), r)
        })
        .collect()
}

fn render_all(consumer: &str) -> Vec<Manifests> {
    let c = repo_config();
    let images = images_for(&c, consumer);
    let node_ports: BTreeMap<PortRef, u16> = c.consumers[consumer]
        .e2e
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .map(|(k, v)| (k.clone(), v.node_port))
        .collect();
    let labels: BTreeMap<String, String> =
        [("io.kubernaut.xtask.run".to_string(), "1884d074".to_string())].into();
    let stack = e2e_stack(&c, consumer);
    let target = Target {
        namespace: "xtask-e2e",
        node_ports: &node_ports,
        labels: &labels,
        pull: None,
    };
    stack
        .names()
        .iter()
        .map(|m| component(&c, &stack, m, &images[m], target, &RepoFiles).unwrap())
        .collect()
}

/// Renders `redis` of notification's E2E stack with templates read through `read`.
fn render_redis(read: &dyn Fn(&Path) -> Result<String>) -> Result<Manifests> {
    render_member(&repo_config(), "redis", read)
}

/// Renders `name` of notification's E2E stack in `c`, templates read through `read`.
fn render_member(
    c: &Config,
    name: &str,
    read: &dyn Fn(&Path) -> Result<String>,
) -> Result<Manifests> {
    let none = BTreeMap::new();
    let target = Target {
        namespace: "ns",
        node_ports: &BTreeMap::new(),
        labels: &none,
        pull: None,
    };
    let stack = e2e_stack(c, "notification");
    component(
        c,
        &stack,
        name,
        &format!("localhost/{name}:x-1"),
        target,
        &Edit(read),
    )
}

#[test]
fn every_consumer_renders_valid_kubernetes_objects() {
    for consumer in ["datastorage", "notification", "gateway", "holmesgpt-api"] {
        let all = render_all(consumer);
        let mut kinds = BTreeSet::new();
        for m in &all {
            for d in &m.docs {
                kinds.insert(
                    as_kubernetes_object(d)
                        .unwrap_or_else(|e| panic!("{consumer}/{}: {e}", m.component)),
                );
            }
            // The text that is applied parses to the same documents.
            let reparsed: Vec<Yaml> = YamlLoader::load_from_str(&m.text)
                .unwrap()
                .into_iter()
                .filter(|d| !d.is_null())
                .collect();
            assert_eq!(reparsed, m.docs, "{}", m.component);
        }
        for k in ["Deployment", "Job", "Service", "Secret"] {
            assert!(kinds.contains(k), "{consumer} renders a {k}");
        }
        let ns = YamlLoader::load_from_str(&namespace_doc("xtask-e2e", &BTreeMap::new())).unwrap();
        assert_eq!(as_kubernetes_object(&ns[0]).unwrap(), "Namespace");
    }
}

#[test]
fn a_misspelt_field_fails_the_round_trip() {
    let bad = |p: &Path| Ok(read_repo(p)?.replace("imagePullPolicy", "imagePullPolcy"));
    let m = render_redis(&bad).unwrap();
    let deployment = m
        .docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .unwrap();
    let err = as_kubernetes_object(deployment).unwrap_err();
    assert!(err.contains("changed in a round trip"), "{err}");
}

#[test]
fn services_and_secrets_come_from_infra_toml() {
    let all = render_all("notification");
    let ds = all.iter().find(|m| m.component == "datastorage").unwrap();
    let svc = to_json(
        ds.docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("Service"))
            .unwrap(),
    );
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30081);
    assert_eq!(svc["spec"]["ports"][0]["port"], 8080);
    assert!(
        svc["spec"]["ports"][1].get("nodePort").is_none(),
        "metrics is not mapped for notification"
    );
    let secret = to_json(
        ds.docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("Secret"))
            .unwrap(),
    );
    assert_eq!(secret["stringData"]["REDIS_URL"], "redis://redis:6379");
    assert_eq!(
        secret["stringData"]["DATABASE_URL"],
        "postgres://slm_user:test_password@postgres:5432/action_history"
    );
    let pg = all.iter().find(|m| m.component == "postgres").unwrap();
    let svc = to_json(
        pg.docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("Service"))
            .unwrap(),
    );
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    let job = all.iter().find(|m| m.component == "migrations").unwrap();
    assert_eq!(
        job.workload,
        Workload::Job {
            name: "migrations".into()
        }
    );
    assert!(
        job.docs
            .iter()
            .all(|d| d["kind"].as_str() != Some("Service")),
        "jobs get no Service"
    );
    let j = to_json(
        job.docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("Job"))
            .unwrap(),
    );
    assert_eq!(
        j["spec"]["template"]["spec"]["containers"][0]["args"],
        serde_json::json!(["migrate"])
    );
    assert_eq!(
        j["spec"]["template"]["spec"]["containers"][0]["image"],
        "localhost/datastorage:notification-1884d074"
    );
}

#[test]
fn rendered_images_pass_the_phase0_check() {
    for consumer in ["datastorage", "notification", "gateway", "holmesgpt-api"] {
        let c = repo_config();
        let built: BTreeSet<String> = images_for(&c, consumer).into_values().collect();
        let uses: Vec<ImageUse> = render_all(consumer)
            .iter()
            .flat_map(|m| image_uses(&m.source, &m.docs))
            .collect();
        assert!(
            check_loaded(&uses, &built).is_empty(),
            "{:?}",
            check_loaded(&uses, &built)
        );
        let used: BTreeSet<String> = uses.into_iter().map(|u| u.image).collect();
        assert_eq!(
            used, built,
            "{consumer}: every built image is used, nothing else"
        );
    }
}

#[test]
fn phase0_check_names_object_and_field() {
    let doc = |image: &str, policy: Option<&str>| {
        let p = policy
            .map(|p| format!("\n          imagePullPolicy: {p}"))
            .unwrap_or_default();
        YamlLoader::load_from_str(&format!(
            "kind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n        - name: c\n          image: {image}{p}\n"
        ))
        .unwrap()
    };
    let built: BTreeSet<String> = ["localhost/web:t-1".to_string()].into();
    let check = |image: &str, policy: Option<&str>| {
        check_loaded(
            &image_uses(Path::new("manifests/web.yaml"), &doc(image, policy)),
            &built,
        )
        .join("\n")
    };
    assert_eq!(check("localhost/web:t-1", Some("Never")), "");
    let e = check("localhost/web:t-2", Some("Never"));
    assert!(e.contains("manifests/web.yaml: Deployment/web spec.template.spec.containers[0].image `localhost/web:t-2` was not built by this run"), "{e}");
    assert!(check("docker.io/web:t-1", Some("Never")).contains("lacks `localhost/`"));
    assert!(check("localhost/web:latest", Some("Never")).contains("`:latest` or untagged"));
    assert!(check("localhost/web", Some("Never")).contains("`:latest` or untagged"));
    assert!(check("localhost/web:t-1", Some("IfNotPresent"))
        .contains("imagePullPolicy is `IfNotPresent`"));
    assert!(check("localhost/web:t-1", None).contains("imagePullPolicy is not set"));
}

#[test]
fn unknown_placeholders_name_file_and_line() {
    let vars: BTreeMap<String, String> = [("NAME".to_string(), "x".to_string())].into();
    let e = substitute(
        "a: ${NAME}\nb: ${NAMSE}\n",
        &PathBuf::from("manifests/x.yaml"),
        &vars,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("manifests/x.yaml:2: unknown placeholder `${NAMSE}`"),
        "{e}"
    );
    assert_eq!(
        substitute("a: ${NAME}-$HOME\n", Path::new("f"), &vars).unwrap(),
        "a: x-$HOME\n"
    );
}

#[test]
fn templates_must_hold_one_named_workload_with_app_label() {
    let no_label = |p: &Path| Ok(read_repo(p)?.replace("app: ${NAME}", "tier: ${NAME}"));
    let e = render_redis(&no_label).unwrap_err();
    assert!(
        e.to_string().contains("must carry the label `app: redis`"),
        "{e}"
    );
    let renamed = |p: &Path| Ok(read_repo(p)?.replacen("name: ${NAME}", "name: cache", 1));
    let e = render_redis(&renamed).unwrap_err();
    assert!(
        e.to_string().contains("the workload is named `cache`"),
        "{e}"
    );
}

#[test]
fn kind_config_maps_node_ports_to_unique_host_ports() {
    let labels: BTreeMap<String, String> = [(
        "io.kubernaut.xtask.owner".to_string(),
        "_alice.".to_string(),
    )]
    .into();
    let text = kind_config(
        "notification-e2e-1884d074",
        &labels,
        &[(30086, 28120), (30081, 28121)],
    );
    let doc = &YamlLoader::load_from_str(&text).unwrap()[0];
    let j = to_json(doc);
    assert_eq!(j["apiVersion"], "kind.x-k8s.io/v1alpha4");
    assert_eq!(j["name"], "notification-e2e-1884d074");
    let node = &j["nodes"][0];
    assert_eq!(node["role"], "control-plane");
    assert_eq!(
        node["labels"]["io.kubernaut.xtask.owner"], "alice",
        "label values are made valid"
    );
    assert_eq!(node["extraPortMappings"][1]["containerPort"], 30081);
    assert_eq!(node["extraPortMappings"][1]["hostPort"], 28121);
}

/// `command`, `args` and `mounts` of infra.toml reach the workload (not only the integration
/// stack): a command and args on the container, the mounted files in a ConfigMap, mounted
/// read-only by subPath (a file) or as a folder of its files.
#[test]
fn command_args_and_mounts_are_put_into_the_workload() {
    let mut c = repo_config();
    let redis = c.components.get_mut("redis").unwrap();
    redis.command = vec!["redis-server".into()];
    redis.args = vec!["--save".into(), "".into()];
    redis.mounts = vec![
        crate::config::Mount {
            target: "/etc/redis/extra.conf".into(),
            source: "manifests/redis.yaml".into(),
            dir: false,
        },
        crate::config::Mount {
            target: "/etc/migrations".into(),
            source: "migrations".into(),
            dir: true,
        },
    ];
    let m = render_member(&c, "redis", &read_repo).unwrap();
    for d in &m.docs {
        as_kubernetes_object(d).unwrap_or_else(|e| panic!("{e}"));
    }
    let reparsed: Vec<Yaml> = YamlLoader::load_from_str(&m.text)
        .unwrap()
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    assert_eq!(reparsed, m.docs, "the applied text is what was checked");
    let doc = |kind: &str| {
        m.docs
            .iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap()
    };
    let pod = &doc("Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        to_json(&container["command"]),
        serde_json::json!(["redis-server"])
    );
    assert_eq!(
        to_json(&container["args"]),
        serde_json::json!(["--save", ""])
    );
    let mounts = to_json(&container["volumeMounts"]);
    assert_eq!(mounts[0]["mountPath"], "/etc/redis/extra.conf");
    assert_eq!(mounts[0]["subPath"], "m0");
    assert_eq!(mounts[1]["subPath"], "m1");
    assert_eq!(mounts[1]["readOnly"], true);
    let cm = to_json(doc("ConfigMap"));
    assert_eq!(cm["metadata"]["name"], "redis-files");
    assert!(cm["data"]["m0"]
        .as_str()
        .unwrap()
        .contains("kind: Deployment"));
    let migration = std::fs::read_dir(crate::repo_root().join("migrations"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .min()
        .unwrap();
    assert!(cm["data"][format!("m1-{migration}")].is_string(), "{cm}");
    let items = to_json(&pod["volumes"][0]["configMap"]["items"]);
    assert!(items
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i["path"] == format!("m1/{migration}")));
}

fn check_loaded(uses: &[ImageUse], built: &BTreeSet<String>) -> Vec<String> {
    check_images_from(uses, built, &Source::Loaded)
}
