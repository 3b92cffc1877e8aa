//! The stand-in recipes: which Debian packages each image gets, the files written into it, and
//! its image config (labels, entrypoint, command, ports) as `--change` instructions. Data only.

use std::collections::BTreeMap;

use crate::config::Image;
use crate::plan::labels::{CREATED, OWNER, SERVICE, STANDIN};

/// The Debian release every stand-in is built from (glibc 2.36, like our build hosts).
pub const SUITE: &str = "bookworm";
/// Packages of the shared base rootfs, on top of minbase.
pub const BASE_INCLUDE: &str = "ca-certificates";
pub const DESCRIPTION: &str = "stand-in built from Debian packages by cargo xtask standins";
/// Where a recipe's entrypoint script is installed.
pub const ENTRYPOINT: &str = "/usr/local/bin/docker-entrypoint.sh";
const POSTGRES_ENTRYPOINT: &str = include_str!("postgres-entrypoint.sh");
const REDIS_ENTRYPOINT: &str = include_str!("redis-entrypoint.sh");
const REGISTRY_ENTRYPOINT: &str = include_str!("registry-entrypoint.sh");
const REGISTRY_CONFIG: &str = include_str!("registry-config.yml");

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
    pub rounds: &'static [&'static [&'static str]],
    /// The entrypoint script's text, installed as [`ENTRYPOINT`].
    pub entrypoint: Option<&'static str>,
    /// Further files (absolute path in the image, text), written after the packages so that
    /// they replace a package's own (mode 0644).
    pub files: &'static [(&'static str, &'static str)],
    /// Commands run in the chroot after the packages (argv).
    pub setup: &'static [&'static [&'static str]],
    /// `--change` instructions besides the labels.
    config: &'static [&'static str],
}

pub const RECIPES: [Recipe; 4] = [
    Recipe {
        service: "postgres",
        reference: "localhost/xtask-standin/postgres:15-bookworm",
        title: "PostgreSQL 15 stand-in (Debian bookworm)",
        rounds: &[&["postgresql-common"], &["postgresql-15"]],
        entrypoint: Some(POSTGRES_ENTRYPOINT),
        files: &[],
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
            // Fast shutdown, like the official image. docker's import cannot set it: see
            // `import::Importer::accepts`.
            "STOPSIGNAL SIGINT",
        ],
    },
    Recipe {
        service: "redis",
        reference: "localhost/xtask-standin/redis:7-bookworm",
        title: "Redis 7 stand-in (Debian bookworm)",
        rounds: &[&["redis-server"]],
        entrypoint: Some(REDIS_ENTRYPOINT),
        files: &[],
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
        files: &[],
        setup: &[],
        config: &["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CMD [\"/bin/bash\"]"],
    },
    Recipe {
        service: "registry",
        reference: "localhost/xtask-standin/registry:2-bookworm",
        title: "OCI registry (distribution 2.8) stand-in (Debian bookworm)",
        rounds: &[&["docker-registry"]],
        entrypoint: Some(REGISTRY_ENTRYPOINT),
        // Replaces the package's own config (htpasswd auth, storage under /var/lib/docker-registry).
        files: &[("/etc/docker/registry/config.yml", REGISTRY_CONFIG)],
        setup: &[
            &["install", "-d", "-m", "755", "/var/lib/registry"],
            // The official image's binary name, for `exec ... registry garbage-collect`.
            &["ln", "-sf", "/usr/bin/docker-registry", "/usr/local/bin/registry"],
        ],
        // No VOLUME: each container would get an anonymous volume that outlives it.
        config: &[
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENTRYPOINT [\"/usr/local/bin/docker-entrypoint.sh\"]",
            "CMD [\"/etc/docker/registry/config.yml\"]",
            "EXPOSE 5000",
        ],
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
        let pairs = [
            (STANDIN, "1".to_string()),
            (OWNER, owner.to_string()),
            (SERVICE, self.service.to_string()),
            (CREATED, created.to_string()),
            ("org.opencontainers.image.title", self.title.to_string()),
            (
                "org.opencontainers.image.description",
                DESCRIPTION.to_string(),
            ),
        ];
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// Every `--change` instruction of the image: labels, then the image config. What an
    /// engine's import takes of them is `import::changes`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let reg = recipe("registry").unwrap();
        assert_eq!(reg.reference, "localhost/xtask-standin/registry:2-bookworm");
        assert_eq!(reg.packages(), vec!["docker-registry"]);
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
            assert!(r.files.iter().all(|(p, _)| p.starts_with('/')));
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
        let reg = recipe("registry").unwrap().changes("bob", 1);
        for want in [
            "EXPOSE 5000",
            "LABEL io.kubernaut.xtask.service=\"registry\"",
            "LABEL io.kubernaut.xtask.standin=\"1\"",
            "CMD [\"/etc/docker/registry/config.yml\"]",
        ] {
            assert!(reg.iter().any(|x| x == want), "missing {want} in {reg:?}");
        }
        assert!(!reg.iter().any(|x| x.starts_with("VOLUME")));
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
        assert!(REGISTRY_ENTRYPOINT.contains("set -- docker-registry serve \"$@\""));
        assert!(REGISTRY_ENTRYPOINT.trim_end().ends_with("exec \"$@\""));
    }

    #[test]
    fn registry_config_keeps_blobs_on_disk_and_allows_deletes() {
        let yaml = yaml_rust2::YamlLoader::load_from_str(REGISTRY_CONFIG).unwrap();
        let c = &yaml[0];
        assert_eq!(
            c["storage"]["filesystem"]["rootdirectory"].as_str(),
            Some("/var/lib/registry")
        );
        assert_eq!(c["storage"]["delete"]["enabled"].as_bool(), Some(true));
        assert_eq!(c["http"]["addr"].as_str(), Some(":5000"));
        assert!(c["auth"].is_badvalue(), "no authentication: {c:?}");
        let reg = recipe("registry").unwrap();
        assert_eq!(
            reg.files,
            &[("/etc/docker/registry/config.yml", REGISTRY_CONFIG)]
        );
    }
}
