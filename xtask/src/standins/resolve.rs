//! Where each third-party image of `infra.toml` comes from on this host, decided before a run
//! creates anything: an explicit `XTASK_IMAGE_*` always wins; then the configured image if it is
//! local; then its stand-in if one was built earlier; then a pull; and when the pull fails, the
//! stand-in is built (once: it is cached and labelled) and used. Every choice but the first two
//! is said in a line.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, Result};

use crate::config::{Config, Image};
use crate::host::tools::Engine;
use crate::standins::Recipe;

/// How an image was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The `XTASK_IMAGE_*` variable named it.
    Explicit,
    /// The configured reference is in local storage.
    Local,
    /// Pulled just now.
    Pulled,
    /// The stand-in (built earlier, or now).
    StandIn { built_now: bool, why: String },
}

/// One image's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub image: String,
    pub reference: String,
    pub source: Source,
}

/// What the engine can tell about a reference, as the decision needs it (a trait so the
/// decision is tested without an engine).
pub trait Store {
    fn exists(&self, reference: &str) -> bool;
    /// `Err` carries the engine's reason (no registry, unknown image, ...).
    fn pull(&self, reference: &str) -> std::result::Result<(), String>;
}

/// The engine's answers for every reference the decisions may ask about, asked in one call
/// (a check per reference, two per image one after another, added up to 0.6 s).
pub struct Local<'a> {
    engine: &'a Engine,
    known: BTreeMap<String, bool>,
}

impl<'a> Local<'a> {
    pub fn check(engine: &'a Engine, config: &Config) -> Self {
        let refs: BTreeSet<String> = config
            .images
            .values()
            .flat_map(|i| {
                let standin = standin_of(i).map(|r| r.reference.to_string());
                std::iter::once(i.default_ref.clone()).chain(standin)
            })
            .collect();
        let refs: Vec<String> = refs.into_iter().collect();
        let known = engine.images_exist(&refs);
        Local { engine, known }
    }
}

impl Store for Local<'_> {
    fn exists(&self, reference: &str) -> bool {
        match self.known.get(reference) {
            Some(exists) => *exists,
            None => self.engine.image_exists(reference),
        }
    }

    fn pull(&self, reference: &str) -> std::result::Result<(), String> {
        match self
            .engine
            .cmd()
            .args(["pull", "--quiet", reference])
            .timeout(Duration::from_secs(300))
            .output()
        {
            Ok(o) if o.success() => Ok(()),
            Ok(o) => Err(o.tail(1)),
            Err(e) => Err(format!("{e:#}")),
        }
    }
}

/// The decision for one image, or the stand-in to build first (`Err(recipe)`).
pub fn decide(
    image: &Image,
    env: &dyn Fn(&str) -> Option<String>,
    store: &dyn Store,
) -> Result<std::result::Result<Choice, (Recipe, String)>> {
    let choice = |reference: String, source| {
        Ok(Ok(Choice {
            image: image.name.clone(),
            reference,
            source,
        }))
    };
    if let Some(v) = image
        .env
        .as_deref()
        .and_then(env)
        .filter(|v| !v.trim().is_empty())
    {
        return choice(v, Source::Explicit);
    }
    if store.exists(&image.default_ref) {
        return choice(image.default_ref.clone(), Source::Local);
    }
    let standin = standin_of(image);
    if let Some(r) = standin.filter(|r| store.exists(r.reference)) {
        let source = Source::StandIn {
            built_now: false,
            why: String::new(),
        };
        return choice(r.reference.to_string(), source);
    }
    let pull_error = match store.pull(&image.default_ref) {
        Ok(()) => return choice(image.default_ref.clone(), Source::Pulled),
        Err(e) => e,
    };
    match standin {
        Some(r) => Ok(Err((r, pull_error))),
        None => bail!(
            "{} is not here and cannot be pulled ({pull_error}), and there is no stand-in \
             recipe for [images.{}]; {}",
            image.default_ref,
            image.name,
            match &image.env {
                Some(e) => format!("set {e} to an image you have"),
                None => "pull or build it, then run again".to_string(),
            }
        ),
    }
}

/// The stand-in recipe an image names in `standin`.
pub fn standin_of(image: &Image) -> Option<Recipe> {
    crate::standins::recipe_of(image)
}

/// Builds the stand-ins a run needs: gets each recipe with the reason its image could not be
/// pulled.
pub type Build<'a> = &'a mut dyn FnMut(&[(Recipe, String)]) -> Result<()>;

/// Decides every image of `config`; builds the stand-ins that are needed with `build`;
/// returns the choices.
pub fn resolve(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
    store: &dyn Store,
    build: Build,
) -> Result<Vec<Choice>> {
    let mut out = Vec::new();
    let mut to_build = Vec::new();
    for image in config.images.values() {
        match decide(image, env, store)? {
            Ok(c) => out.push(c),
            Err((r, why)) => to_build.push((image.name.clone(), r, why)),
        }
    }
    if !to_build.is_empty() {
        let recipes: Vec<(Recipe, String)> =
            to_build.iter().map(|(_, r, w)| (*r, w.clone())).collect();
        build(&recipes)?;
        for (name, r, why) in to_build {
            out.push(Choice {
                image: name,
                reference: r.reference.to_string(),
                source: Source::StandIn {
                    built_now: true,
                    why,
                },
            });
        }
    }
    out.sort_by(|a, b| a.image.cmp(&b.image));
    Ok(out)
}

impl Choice {
    /// The line a run prints for this choice (`None` when nothing needs saying).
    pub fn line(&self, image: &Image) -> Option<String> {
        let choose = image
            .env
            .as_ref()
            .map(|e| format!("; set {e} to use another image"))
            .unwrap_or_default();
        match &self.source {
            Source::Explicit | Source::Local => None,
            Source::Pulled => Some(format!("pulled {}", self.reference)),
            Source::StandIn { built_now: false, .. } => Some(format!(
                "{} is not here: using its stand-in {} (built earlier from Debian packages{choose})",
                image.default_ref, self.reference
            )),
            Source::StandIn { built_now: true, why } => Some(format!(
                "{} is not here and cannot be pulled ({why}): using its stand-in {}, built now \
                 from Debian packages and kept for later runs{choose}",
                image.default_ref, self.reference
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    struct Fake {
        local: RefCell<BTreeSet<String>>,
        registry: BTreeSet<String>,
    }

    impl Store for Fake {
        fn exists(&self, r: &str) -> bool {
            self.local.borrow().contains(r)
        }
        fn pull(&self, r: &str) -> std::result::Result<(), String> {
            if self.registry.contains(r) {
                self.local.borrow_mut().insert(r.to_string());
                Ok(())
            } else {
                Err("dial tcp: lookup registry-1.docker.io: no such host".into())
            }
        }
    }

    fn image(name: &str) -> Image {
        Image {
            name: name.into(),
            default_ref: format!("docker.io/library/{name}:1"),
            env: Some(format!("XTASK_IMAGE_{}", name.to_uppercase())),
            standin: (name != "keycloak").then(|| name.to_string()),
        }
    }

    fn fake(local: &[&str], registry: &[&str]) -> Fake {
        Fake {
            local: RefCell::new(local.iter().map(|s| s.to_string()).collect()),
            registry: registry.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn an_explicit_variable_always_wins() {
        let env = |k: &str| (k == "XTASK_IMAGE_REDIS").then(|| "mine:1".to_string());
        let c = decide(
            &image("redis"),
            &env,
            &fake(&["docker.io/library/redis:1"], &[]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (c.reference.as_str(), c.source),
            ("mine:1", Source::Explicit)
        );
    }

    #[test]
    fn local_then_built_stand_in_then_pull_then_build() {
        let none = |_: &str| None;
        let redis = image("redis");
        let standin = crate::standins::recipe("redis").unwrap().reference;
        let c = decide(&redis, &none, &fake(&["docker.io/library/redis:1"], &[])).unwrap();
        assert_eq!(c.unwrap().source, Source::Local);
        let c = decide(&redis, &none, &fake(&[standin], &[]))
            .unwrap()
            .unwrap();
        assert_eq!(c.reference, standin);
        assert!(c.line(&redis).unwrap().contains("XTASK_IMAGE_REDIS"));
        let c = decide(&redis, &none, &fake(&[], &["docker.io/library/redis:1"])).unwrap();
        assert_eq!(c.unwrap().source, Source::Pulled);
        let (r, why) = decide(&redis, &none, &fake(&[], &[])).unwrap().unwrap_err();
        assert_eq!(r.reference, standin);
        assert!(why.contains("no such host"), "{why}");
    }

    #[test]
    fn no_recipe_and_no_registry_names_the_variable() {
        let err = decide(&image("keycloak"), &|_| None, &fake(&[], &[])).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("XTASK_IMAGE_KEYCLOAK") && err.contains("cannot be pulled"),
            "{err}"
        );
    }
}
