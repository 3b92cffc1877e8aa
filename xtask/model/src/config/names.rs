//! Every rule a name in `infra.toml` follows, and every name derived from one, in one place:
//! `check` enforces these limits and the planners form names with these same functions, so the
//! two cannot disagree.
//!
//! Components, consumers and images are lowercase DNS labels with hyphens that start with a
//! letter (Kubernetes Service names are DNS-1035 labels): `^[a-z]([-a-z0-9]*[a-z0-9])?$`.

/// A DNS label: Kubernetes object and Service names, label values (`app: <component>`), and
/// the names containers reach each other by.
pub const LABEL_MAX: usize = 63;
/// An OCI image tag.
pub const TAG_MAX: usize = 128;
/// Login names are cut to this many characters in tags (`Facts` does it), so the tag limit can
/// be checked before anyone runs anything.
pub const USER_MAX: usize = 32;
/// Hex digits of a run id (48 random bits; the first 8 are the suffix of infrastructure tags).
pub const RUN_ID_MAX: usize = 12;
/// kind names its node container (and hostname) `{cluster}-control-plane`.
pub const KIND_NODE_SUFFIX: &str = "-control-plane";
/// The longest kind cluster name whose node hostname is still a DNS label; as a cluster is
/// `{consumer}-e2e-{run id}`, a consumer name has at most 32 characters.
pub const CLUSTER_MAX: usize = LABEL_MAX - KIND_NODE_SUFFIX.len();
/// A Kubernetes port name (an IANA service name).
pub const PORT_NAME_MAX: usize = 15;
/// The name the generated Service gives a component's main port; no extra port may take it.
pub const MAIN_PORT: &str = "main";
/// Build arguments that `cargo xtask` sets itself.
pub const RESERVED_BUILD_ARGS: [&str; 3] = ["BASE_IMAGE", "REVISION", "CREATED"];

/// `{service}-{user}-{git7}-{unix}` (design.md section 2).
pub fn service_tag(service: &str, user: &str, git7: &str, unix: u64) -> String {
    format!("{service}-{user}-{git7}-{unix}")
}

/// `{consumer}-{run id}`: the tag of an image built for one run of a consumer.
pub fn infra_tag(consumer: &str, run_id: &str) -> String {
    format!("{consumer}-{run_id}")
}

/// `{consumer}_{component}_test` (design.md section 4).
pub fn container_name(consumer: &str, component: &str) -> String {
    format!("{consumer}_{component}_test")
}

/// `{consumer}_test_network` (design.md section 4).
pub fn network_name(consumer: &str) -> String {
    format!("{consumer}_test_network")
}

/// `{consumer}-e2e-{run id}`: the kind cluster of one E2E run.
pub fn cluster_name(consumer: &str, run_id: &str) -> String {
    format!("{consumer}-e2e-{run_id}")
}

/// `{consumer}-e2e`: the namespace an E2E run deploys into.
pub fn e2e_namespace(consumer: &str) -> String {
    format!("{consumer}-e2e")
}

/// A kept cluster's name: a DNS label short enough for kind's node hostname, and for its
/// registry container `{name}-registry`.
pub fn check_cluster(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= CLUSTER_MAX
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        anyhow::bail!(
            "cluster name `{name}`: use lowercase letters, digits and `-`, starting with a letter, \
             at most {CLUSTER_MAX} characters (kind names its node `<name>{KIND_NODE_SUFFIX}`)"
        );
    }
    Ok(())
}

/// `{consumer}-{run id}`: the namespace of one E2E run in a kept or shared cluster.
pub fn run_namespace(consumer: &str, run_id: &str) -> String {
    format!("{consumer}-{run_id}")
}

/// `{CONSUMER}_{NAME}_PORT`: how a consumer's tests learn one of its own in-process ports.
pub fn own_port_var(consumer: &str, name: &str) -> String {
    format!("{consumer}_{name}_PORT")
        .to_uppercase()
        .replace('-', "_")
}

/// `{COMPONENT}[_{PORT}]_URL`: how tests find a published port.
pub fn url_env_var(component: &str, port: Option<&str>) -> String {
    let mut s = component.to_uppercase();
    if let Some(p) = port {
        s.push('_');
        s.push_str(&p.to_uppercase());
    }
    s.push_str("_URL");
    s.replace('-', "_")
}

/// `^[a-z]([-a-z0-9]*[a-z0-9])?$`
pub fn is_label(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A long name shortened for messages.
pub fn shown(name: &str) -> String {
    if name.chars().count() <= 24 {
        name.to_string()
    } else {
        format!("{}...", name.chars().take(20).collect::<String>())
    }
}

fn shape(what: &str, name: &str) -> Result<(), String> {
    if is_label(name) {
        return Ok(());
    }
    Err(format!(
        "{what} name `{}` must be lowercase letters, digits and inner hyphens, starting with a \
         letter (it becomes part of image tags, container and Kubernetes names)",
        shown(name)
    ))
}

/// One name derived from a name of the file, and its limit.
struct Derived {
    /// The derived name (for its length).
    name: String,
    /// How messages show it: `the kind cluster name `{consumer}-e2e-{run id}``.
    shown: String,
    max: usize,
    /// Why the limit, when it is not plain.
    why: &'static str,
}

fn within(what: &str, name: &str, derived: &[Derived]) -> Result<(), String> {
    shape(what, name)?;
    let own = name.chars().count();
    for d in derived {
        let n = d.name.chars().count();
        if n <= d.max {
            continue;
        }
        let most = (d.max + own).saturating_sub(n);
        return Err(if d.name == name {
            format!(
                "{what} name `{}` is {own} characters; it becomes {} (at most {}{})",
                shown(name),
                d.shown,
                d.max,
                d.why
            )
        } else {
            format!(
                "{what} name `{}` is {own} characters; {} would have {n} (at most {}{}), so a \
                 {what} name has at most {most}",
                shown(name),
                d.shown,
                d.max,
                d.why
            )
        });
    }
    Ok(())
}

/// A component (infra, service or job): a Kubernetes object, Service and label value, and the
/// tag of its image.
pub fn component(name: &str) -> Result<(), String> {
    let longest_tag = service_tag(name, &"u".repeat(USER_MAX), "0123456", 9_999_999_999);
    within(
        "component",
        name,
        &[
            Derived {
                name: name.to_string(),
                shown: "a Kubernetes object name".into(),
                max: LABEL_MAX,
                why: "",
            },
            Derived {
                name: longest_tag,
                shown: "the image tag `{service}-{user}-{git7}-{unix}`".into(),
                max: TAG_MAX,
                why: ", with a user of 32 characters",
            },
        ],
    )
}

/// A consumer: its kind cluster, namespace and the tag of images built for its runs.
pub fn consumer(name: &str) -> Result<(), String> {
    let run = "f".repeat(RUN_ID_MAX);
    within(
        "consumer",
        name,
        &[
            Derived {
                name: cluster_name(name, &run),
                shown: "the kind cluster name `{consumer}-e2e-{run id}`".into(),
                max: CLUSTER_MAX,
                why: ": kind adds `-control-plane` for its node's hostname, a DNS label",
            },
            Derived {
                name: e2e_namespace(name),
                shown: "the namespace `{consumer}-e2e`".into(),
                max: LABEL_MAX,
                why: "",
            },
            Derived {
                name: infra_tag(name, &run),
                shown: "the image tag `{consumer}-{run id}`".into(),
                max: TAG_MAX,
                why: "",
            },
        ],
    )
}

/// An `[images.*]` name.
pub fn image(name: &str) -> Result<(), String> {
    within(
        "image",
        name,
        &[Derived {
            name: name.to_string(),
            shown: "a DNS label like every other name".into(),
            max: LABEL_MAX,
            why: "",
        }],
    )
}

/// `{consumer}_{component}_test` is the name other containers resolve through DNS.
pub fn container(consumer: &str, component: &str) -> Result<(), String> {
    let c = container_name(consumer, component);
    let n = c.chars().count();
    if n <= LABEL_MAX {
        return Ok(());
    }
    Err(format!(
        "the container name `{}` is {n} characters; other containers reach it by that name \
         through DNS, whose labels hold at most {LABEL_MAX}: shorten `{}` or `{}`",
        shown(&c),
        shown(consumer),
        shown(component)
    ))
}

/// A port name (Kubernetes: an IANA service name): at most 15 of `[a-z0-9-]`, a letter among
/// them, no hyphen at either end or twice in a row; not `main`.
pub fn port_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().count() <= PORT_NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !ok {
        return Err(format!(
            "port name `{}` must be at most {PORT_NAME_MAX} lowercase letters, digits and \
             single inner hyphens, with a letter (a Kubernetes port name)",
            shown(name)
        ));
    }
    if name == MAIN_PORT {
        return Err(format!(
            "port name `{MAIN_PORT}` is taken by the main port in the generated Service; pick \
             another"
        ));
    }
    Ok(())
}

/// `[A-Z_][A-Z0-9_]*`
pub fn env_var(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an environment variable name (use A-Z, 0-9 and _, not starting with a \
             digit)",
            shown(name)
        ))
    }
}

/// A build argument: `[A-Za-z_][A-Za-z0-9_]*`, not one `cargo xtask` sets.
pub fn build_arg(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "`{}` is not a build argument name (use letters, digits and _)",
            shown(name)
        ));
    }
    if RESERVED_BUILD_ARGS.contains(&name) {
        return Err(format!(
            "`{name}` is set by cargo xtask itself ({}); pick another name",
            RESERVED_BUILD_ARGS.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_from_the_derived_names() {
        assert_eq!(CLUSTER_MAX, 49);
        assert_eq!(RUN_ID_MAX, 12, "host::facts::random_id makes 12 hex digits");
        let c = "c".repeat(32);
        let node = format!(
            "{}{KIND_NODE_SUFFIX}",
            cluster_name(&c, &"f".repeat(RUN_ID_MAX))
        );
        assert_eq!(node.len(), LABEL_MAX);
        assert!(consumer(&c).is_ok());
        let e = consumer(&format!("{c}x")).unwrap_err();
        assert!(e.contains("at most 49") && e.contains("at most 32"), "{e}");
    }

    #[test]
    fn labels() {
        for ok in ["a", "redis-cache", "holmesgpt-api", "a1", "mock-llm2"] {
            assert!(is_label(ok), "{ok}");
            assert!(component(ok).is_ok());
        }
        for bad in ["", "A", "1a", "a-", "-a", "a_b", "a.b", "é"] {
            assert!(!is_label(bad), "{bad}");
        }
        assert!(component(&"a".repeat(63)).is_ok());
        let e = component(&"a".repeat(64)).unwrap_err();
        assert!(
            e.contains("is 64 characters; it becomes a Kubernetes object name (at most 63)"),
            "{e}"
        );
    }

    #[test]
    fn ports_env_and_build_args() {
        assert!(port_name("metrics").is_ok());
        assert!(port_name("grpc-web").is_ok());
        for bad in [
            "",
            "123",
            "a--b",
            "-a",
            "abcdefghijklmnop",
            "Metrics",
            "main",
        ] {
            assert!(port_name(bad).is_err(), "{bad}");
        }
        assert!(env_var("LOG_LEVEL").is_ok());
        assert!(env_var("_X1").is_ok());
        for bad in ["", "log", "1X", "A-B"] {
            assert!(env_var(bad).is_err(), "{bad}");
        }
        assert!(build_arg("http_proxy").is_ok());
        assert!(build_arg("BASE_IMAGE")
            .unwrap_err()
            .contains("set by cargo xtask"));
        assert_eq!(
            url_env_var("mock-llm", Some("grpc-web")),
            "MOCK_LLM_GRPC_WEB_URL"
        );
        assert_eq!(container("a", "b"), Ok(()));
        assert!(container(&"c".repeat(32), &"d".repeat(30))
            .unwrap_err()
            .contains("at most 63"));
    }
}
