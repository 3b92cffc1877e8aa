//! Tests of the plan: fixtures from the repository's own infra.toml.

use super::*;
use crate::plan::facts::Facts;
use crate::plan::stack::tests::{facts, read_repo, repo_config, Edit, RepoFiles};
use std::path::Path;

fn plan_with(consumer: &str, loading: Loading, facts: &Facts, files: &dyn Files) -> Result<Plan> {
    plan_to(consumer, &Target::Fresh(loading), facts, files)
}

fn plan_to(consumer: &str, target: &Target, facts: &Facts, files: &dyn Files) -> Result<Plan> {
    plan_from(consumer, target, facts, files, &crate::plan::NO_SNAPSHOTS)
}

fn plan_from(
    consumer: &str,
    target: &Target,
    facts: &Facts,
    files: &dyn Files,
    snapshots: &BTreeMap<String, crate::plan::Snapshot>,
) -> Result<Plan> {
    let config = repo_config();
    let run = Run {
        config: &config,
        consumer,
        facts,
        runs_dir: Path::new("/repo/target/xtask/runs"),
        pid: 7,
        env: &|_| None,
        snapshots,
    };
    plan(&run, target, files, &[])
}

fn shared_target() -> Target {
    Target::Shared(shared::Shared {
        cluster: "team-cluster".into(),
        kubeconfig: "/home/alice/.kube/config".into(),
        context: Some("team-cluster".into()),
        registry: shared::Registry::parse("registry.example.com/ci").unwrap(),
        ttl_secs: 7200,
        max_runs: 3,
        host: "build-7".into(),
    })
}

fn shared_plan(consumer: &str) -> Plan {
    plan_to(consumer, &shared_target(), &facts(), &RepoFiles).unwrap()
}

fn plan_for(consumer: &str, loading: Loading) -> Plan {
    plan_with(consumer, loading, &facts(), &RepoFiles).unwrap()
}

fn deps<'a>(p: &'a Plan, id: &str) -> &'a [String] {
    &p.nodes
        .iter()
        .find(|n| n.id == id)
        .unwrap_or_else(|| panic!("no {id}"))
        .deps
}

#[test]
fn one_reference_per_image_from_phase0_to_deploy() {
    let p = plan_for("notification", Loading::Archive);
    assert_eq!(
        p.images["notification"],
        "localhost/notification:notification-alice-abc1234-1734278400"
    );
    assert_eq!(
        p.images["datastorage"],
        "localhost/datastorage:notification-1884d074"
    );
    assert_eq!(p.images["migrations"], p.images["datastorage"]);
    assert_eq!(
        p.images["postgres"],
        "localhost/postgres:notification-1884d074"
    );
    // The reference built is the reference saved, loaded, verified and deployed.
    let (mut built, mut saved, mut loaded, mut verified) = (
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
    );
    for n in &p.nodes {
        match &n.action {
            Step::Image(b) => {
                built.insert(b.spec().reference.clone());
            }
            Step::Save { reference, .. } => {
                saved.insert(reference.clone());
            }
            Step::Load { reference, .. } => {
                loaded.insert(reference.clone());
            }
            Step::Deploy { images, .. } => verified.extend(images.iter().cloned()),
            _ => {}
        }
    }
    let deployed = deployed_images(&p);
    assert_eq!(built.len(), 4, "{built:?}");
    assert_eq!(built, saved);
    assert_eq!(built, loaded);
    assert_eq!(built, verified);
    assert_eq!(built, deployed);
}

#[test]
fn images_build_while_the_cluster_is_created() {
    let p = plan_for("gateway", Loading::Archive);
    assert!(
        deps(&p, "cluster").is_empty(),
        "cluster creation waits for nothing"
    );
    assert_eq!(deps(&p, "image:datastorage"), ["compile"]);
    assert!(
        deps(&p, "image:postgres").is_empty(),
        "re-tagging needs no compile"
    );
    assert_eq!(deps(&p, "save:datastorage"), ["image:datastorage"]);
    assert_eq!(
        deps(&p, "load:datastorage"),
        ["save:datastorage", "cluster"]
    );
    assert!(deps(&p, "deploy:datastorage").contains(&"deploy:migrations".to_string()));
    assert!(deps(&p, "deploy:gateway").contains(&"deploy:notification".to_string()));
    assert_eq!(
        deps(&p, "deploy:redis"),
        ["namespace", "load:redis"],
        "infrastructure deploys while Rust compiles"
    );
    assert_eq!(
        deps(&p, "deploy:migrations"),
        ["namespace", "load:datastorage", "deploy:postgres"]
    );
    assert_eq!(
        p.nodes
            .iter()
            .filter(|n| n.id.starts_with("image:"))
            .count(),
        5
    );
}

#[test]
fn docker_loads_from_its_store() {
    let p = plan_for("notification", Loading::DockerImage);
    assert!(p.nodes.iter().all(|n| !n.id.starts_with("save:")));
    assert_eq!(
        deps(&p, "load:datastorage"),
        ["image:datastorage", "cluster"]
    );
}

#[test]
fn cluster_and_tests_use_this_consumers_ports() {
    let p = plan_for("notification", Loading::Archive);
    assert_eq!(p.cluster, "notification-e2e-1884d074a1b2");
    assert!(p.kind_config.contains("hostPort: 28120"));
    assert!(p.kind_config.contains("containerPort: 30086"));
    assert!(p
        .kind_config
        .contains("io.kubernaut.xtask.run: 1884d074a1b2"));
    assert_eq!(p.tests.env["NOTIFICATION_URL"], "http://localhost:28120");
    assert_eq!(p.tests.env["DATASTORAGE_URL"], "http://localhost:28121");
    assert_eq!(p.claims.len(), 2);
}

#[test]
fn image_tag_override_reaches_the_manifests() {
    let f = Facts {
        image_tag: Some("ci-deadbee-7".into()),
        ..facts()
    };
    let p = plan_with("notification", Loading::Archive, &f, &RepoFiles).unwrap();
    let m = p
        .manifests
        .iter()
        .find(|m| m.component == "notification")
        .unwrap();
    assert!(
        m.text
            .contains("image: localhost/notification:ci-deadbee-7"),
        "{}",
        m.text
    );
}

#[test]
fn a_template_with_a_foreign_image_is_refused_before_anything_runs() {
    let bad = |p: &Path| {
        Ok(read_repo(p)?.replace("image: ${IMAGE}", "image: docker.io/library/redis:latest"))
    };
    let err = plan_with("notification", Loading::Archive, &facts(), &Edit(bad)).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("nothing was built or applied"), "{msg}");
    assert!(msg.contains("manifests/redis.yaml: Deployment/redis spec.template.spec.containers[0].image `docker.io/library/redis:latest` was not built by this run"), "{msg}");
}

#[test]
fn a_shared_run_pushes_what_it_built_and_deploys_only_that() {
    let p = shared_plan("notification");
    assert_eq!(p.namespace, "notification-1884d074a1b2");
    assert_eq!(p.cluster, "team-cluster");
    assert!(
        p.kind_config.is_empty() && p.claims.is_empty(),
        "no cluster, no host ports"
    );
    let (mut built, mut pushed) = (BTreeSet::new(), BTreeSet::new());
    for n in &p.nodes {
        match &n.action {
            Step::Image(b) => {
                built.insert(format!(
                    "registry.example.com/ci/{}",
                    b.spec().reference.trim_start_matches("localhost/")
                ));
            }
            Step::Push { remote, .. } => {
                pushed.insert(remote.clone());
                assert_eq!(n.deps, [n.id.replacen("push:", "image:", 1)]);
            }
            Step::Cluster { .. } | Step::Load { .. } | Step::Save { .. } => {
                panic!("{} has no place in a shared cluster", n.id)
            }
            _ => {}
        }
    }
    let deployed = deployed_images(&p);
    assert_eq!(built.len(), 4, "{built:?}");
    assert_eq!(built, pushed);
    assert_eq!(built, deployed);
    assert!(p
        .manifests
        .iter()
        .all(|m| !m.text.contains("imagePullPolicy: Never")));
    assert!(
        p.manifests.iter().all(|m| !m.text.contains("nodePort")),
        "no NodePorts in a shared cluster"
    );
    assert!(deps(&p, "deploy:datastorage").contains(&"push:datastorage".to_string()));
    assert!(
        deps(&p, "namespace").contains(&"admit".to_string()),
        "no namespace before a slot"
    );
}

#[test]
fn a_shared_runs_namespace_says_whose_it_is_when_it_expires_and_what_it_pushed() {
    let p = shared_plan("notification");
    let doc = &yaml_rust2::YamlLoader::load_from_str(&p.namespace_doc).unwrap()[0];
    let meta = &doc["metadata"];
    assert_eq!(meta["name"].as_str(), Some("notification-1884d074a1b2"));
    assert_eq!(
        meta["labels"][crate::plan::labels::RUN].as_str(),
        Some("1884d074a1b2")
    );
    assert_eq!(
        meta["labels"][crate::plan::labels::HOST].as_str(),
        Some("build-7")
    );
    let expires: u64 = meta["annotations"][crate::plan::labels::EXPIRES]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(expires, p.labels.created + 7200);
    let pushed = meta["annotations"][crate::plan::labels::PUSHED]
        .as_str()
        .unwrap();
    assert_eq!(pushed.split(' ').count(), 4, "{pushed}");
    assert!(
        pushed
            .split(' ')
            .all(|r| r.starts_with("registry.example.com/ci/")),
        "{pushed}"
    );
}

#[test]
fn a_shared_runs_tests_reach_each_mapped_port_through_a_forward() {
    let p = shared_plan("notification");
    let vars: BTreeSet<&str> = p.forwards.iter().map(|f| f.var.as_str()).collect();
    assert_eq!(vars, ["DATASTORAGE_URL", "NOTIFICATION_URL"].into());
    for f in &p.forwards {
        assert_eq!(f.url, "http://localhost:{local}", "{f:?}");
        assert!(deps(&p, &format!("forward:{}", f.port)).contains(&format!("deploy:{}", f.service)));
    }
}

#[test]
fn admission_slots_parse_as_config_maps_with_the_runs_labels() {
    let p = shared_plan("notification");
    let Some(s) = &p.shared else { panic!("shared") };
    let doc =
        &yaml_rust2::YamlLoader::load_from_str(&shared::slot_doc(2, &p.labels, s)).unwrap()[0];
    assert_eq!(doc["kind"].as_str(), Some("ConfigMap"));
    assert_eq!(doc["metadata"]["name"].as_str(), Some("xtask-slot-2"));
    assert_eq!(doc["metadata"]["namespace"].as_str(), Some("xtask-system"));
    assert_eq!(
        doc["metadata"]["labels"][crate::plan::labels::RUN].as_str(),
        Some("1884d074a1b2")
    );
    assert_eq!(doc["data"]["run"].as_str(), Some("1884d074a1b2"));
}

/// Every image the plan's manifests use.
fn deployed_images(p: &Plan) -> BTreeSet<String> {
    p.manifests
        .iter()
        .flat_map(|m| render::image_uses(&m.source, &m.docs))
        .map(|u| u.image)
        .collect()
}

#[test]
fn postgres_is_deployed_from_a_cached_data_image_and_its_job_still_runs() {
    let base_of = |p: &Plan| {
        p.nodes
            .iter()
            .find_map(|n| match &n.action {
                Step::Image(Build::Retag {
                    component,
                    base,
                    spec,
                }) if component == "postgres" => {
                    assert_eq!(spec.build_args["BASE"], *base);
                    Some(base.clone())
                }
                _ => None,
            })
            .expect("no image:postgres")
    };
    let cold = plan_for("notification", Loading::Archive);
    let (data, snapshots) = crate::plan::stack::tests::postgres_data_hit();
    let target = Target::Fresh(Loading::Archive);
    let warm = plan_from("notification", &target, &facts(), &RepoFiles, &snapshots).unwrap();
    assert_ne!(base_of(&cold), data);
    assert_eq!(base_of(&warm), data);
    // Same references, same tasks: postgres starts from the data image, and the migrations
    // Job still runs, beside the tests (the image holds its work) instead of before
    // DataStorage: it starts once everything else is deployed.
    assert_eq!(warm.images, cold.images);
    let ids = |p: &Plan| p.nodes.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&warm), ids(&cold));
    assert!(deps(&cold, "deploy:datastorage").contains(&"deploy:migrations".to_string()));
    assert!(cold.beside_tests().is_empty());
    let ds = deps(&warm, "deploy:datastorage");
    assert!(!ds.contains(&"deploy:migrations".to_string()), "{ds:?}");
    assert_eq!(ds.iter().filter(|d| *d == "deploy:postgres").count(), 1);
    assert_eq!(warm.held["migrations"], "postgres");
    assert_eq!(
        warm.beside_tests(),
        BTreeSet::from(["deploy:migrations".to_string()])
    );
    let mut job = deps(&cold, "deploy:migrations").to_vec();
    job.extend(["deploy:redis", "deploy:datastorage", "deploy:notification"].map(String::from));
    assert_eq!(deps(&warm, "deploy:migrations"), job);
    // Registry runs deploy the same way.
    let shared = plan_from(
        "notification",
        &shared_target(),
        &facts(),
        &RepoFiles,
        &snapshots,
    )
    .unwrap();
    let ds = deps(&shared, "deploy:datastorage");
    assert!(!ds.contains(&"deploy:migrations".to_string()), "{ds:?}");
    assert_eq!(shared.beside_tests(), warm.beside_tests());
    assert!(deps(&shared, "deploy:migrations").contains(&"deploy:notification".to_string()));
}
