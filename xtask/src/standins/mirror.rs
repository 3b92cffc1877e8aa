//! The Debian mirror stand-ins are built from, read from apt's own sources (deb822
//! `debian.sources` first, then the one-line `sources.list`): never a host name written down.

use std::collections::BTreeMap;
use std::fs;

use anyhow::{Context, Result};

pub const DEBIAN_SOURCES: &str = "/etc/apt/sources.list.d/debian.sources";
pub const SOURCES_LIST: &str = "/etc/apt/sources.list";

/// One deb822 stanza: lowercase field names, values with continuation lines joined.
type Stanza = BTreeMap<String, String>;

/// The host's mirror for `suite`.
pub fn host_mirror(suite: &str) -> Result<String> {
    let deb822 = fs::read_to_string(DEBIAN_SOURCES).ok();
    let list = fs::read_to_string(SOURCES_LIST).ok();
    find_mirror(deb822.as_deref(), list.as_deref(), suite)
}

/// The Debian mirror from apt's configuration (deb822 first, then the one-line list).
pub fn find_mirror(deb822: Option<&str>, list: Option<&str>, suite: &str) -> Result<String> {
    deb822
        .and_then(|t| mirror_from_deb822(t, suite))
        .or_else(|| list.and_then(|t| mirror_from_list(t, suite)))
        .with_context(|| {
            format!(
                "no Debian mirror found in apt's configuration (looked for a `URIs: http...` line in \
                 {DEBIAN_SOURCES} and a `deb http...` line in {SOURCES_LIST}); configure apt with a \
                 reachable Debian mirror, check it with `apt-get update`, then run this again"
            )
        })
}

/// The mirror of the first deb822 stanza that serves `suite` (e.g. `bookworm`, not
/// `bookworm-security`); failing that, of the first `deb` stanza that is not a security one.
pub fn mirror_from_deb822(text: &str, suite: &str) -> Option<String> {
    let words = |s: &Stanza, k: &str| -> Vec<String> {
        s.get(k)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let usable: Vec<(Vec<String>, String)> = stanzas(text)
        .iter()
        .filter(|s| words(s, "types").iter().any(|t| t == "deb"))
        .filter(|s| {
            !s.get("enabled")
                .is_some_and(|e| e.eq_ignore_ascii_case("no"))
        })
        .filter_map(|s| {
            let uri = words(s, "uris").into_iter().find(|u| is_http(u))?;
            Some((words(s, "suites"), uri))
        })
        .collect();
    usable
        .iter()
        .find(|(suites, _)| suites.iter().any(|s| s == suite))
        .or_else(|| {
            usable
                .iter()
                .find(|(suites, _)| !suites.iter().any(|s| s.ends_with("-security")))
        })
        .map(|(_, uri)| uri.trim_end_matches('/').to_string())
}

/// The stanzas of a deb822 text (comments skipped, blank lines separate stanzas).
fn stanzas(text: &str) -> Vec<Stanza> {
    let mut stanzas: Vec<Stanza> = vec![BTreeMap::new()];
    let mut last_key: Option<String> = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            if stanzas.last().is_some_and(|s| !s.is_empty()) {
                stanzas.push(BTreeMap::new());
            }
            last_key = None;
            continue;
        }
        if line.trim_start().starts_with('#') {
            continue;
        }
        let Some(stanza) = stanzas.last_mut() else {
            continue;
        };
        if line.starts_with([' ', '\t']) {
            // A continuation line of a multi-line field.
            if let Some(v) = last_key.as_ref().and_then(|k| stanza.get_mut(k)) {
                v.push(' ');
                v.push_str(line.trim());
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            stanza.insert(k.clone(), v.trim().to_string());
            last_key = Some(k);
        }
    }
    stanzas
}

/// The mirror of the first `deb http...` line of a one-line-style sources list (preferring
/// one for `suite`).
pub fn mirror_from_list(text: &str, suite: &str) -> Option<String> {
    let entries: Vec<(String, String)> = text.lines().filter_map(list_entry).collect();
    entries
        .iter()
        .find(|(d, _)| d == suite)
        .or_else(|| entries.first())
        .map(|(_, u)| u.clone())
}

/// `(suite, mirror)` of a `deb http...` line.
fn list_entry(line: &str) -> Option<(String, String)> {
    let line = line.split('#').next()?.trim();
    let rest = line.strip_prefix("deb")?;
    if !rest.starts_with([' ', '\t']) {
        return None; // deb-src
    }
    let mut rest = rest.trim_start();
    if rest.starts_with('[') {
        rest = &rest[rest.find(']')? + 1..];
    }
    let mut words = rest.split_whitespace();
    let uri = words.next().filter(|u| is_http(u))?;
    let dist = words.next().unwrap_or_default();
    Some((dist.to_string(), uri.trim_end_matches('/').to_string()))
}

fn is_http(u: &str) -> bool {
    u.starts_with("http://") || u.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
";

    #[test]
    fn mirror_from_deb822_takes_the_main_suite() {
        assert_eq!(
            mirror_from_deb822(DEB822, "bookworm").as_deref(),
            Some("http://deb.debian.org/debian")
        );
        // Security first in the file: still the main archive.
        let swapped = "Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n\n\
                       Types: deb deb-src\nURIs: https://mirror.example/debian/\nSuites: bookworm\n";
        assert_eq!(
            mirror_from_deb822(swapped, "bookworm").as_deref(),
            Some("https://mirror.example/debian")
        );
        // Another release on the host: the first non-security mirror.
        let trixie = "Types: deb\nURIs: http://m.example/debian\nSuites: trixie\n";
        assert_eq!(
            mirror_from_deb822(trixie, "bookworm").as_deref(),
            Some("http://m.example/debian")
        );
        // Source-only, disabled and non-http stanzas are ignored.
        let none = "Types: deb-src\nURIs: http://a/debian\nSuites: bookworm\n\n\
                    Types: deb\nEnabled: no\nURIs: http://b/debian\nSuites: bookworm\n\n\
                    Types: deb\nURIs: file:/srv/debian\nSuites: bookworm\n";
        assert_eq!(mirror_from_deb822(none, "bookworm"), None);
    }

    #[test]
    fn deb822_continuation_lines_join_their_field() {
        let text = "Types: deb\nURIs:\n http://cont.example/debian\nSuites: bookworm\n";
        assert_eq!(
            mirror_from_deb822(text, "bookworm").as_deref(),
            Some("http://cont.example/debian")
        );
    }

    #[test]
    fn mirror_from_one_line_list() {
        let list = "# comment\ndeb-src http://src.example/debian bookworm main\n\
                    deb [signed-by=/k.gpg arch=amd64] http://sec.example/debian-security bookworm-security main\n\
                    deb http://mirror.example/debian/ bookworm main # trailing\n";
        assert_eq!(
            mirror_from_list(list, "bookworm").as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            mirror_from_list("deb cdrom:[x]/ bookworm main\n", "bookworm"),
            None
        );
        assert_eq!(
            mirror_from_list("deb http://only.example/debian trixie main\n", "bookworm").as_deref(),
            Some("http://only.example/debian")
        );
    }

    #[test]
    fn find_mirror_falls_back_and_explains() {
        let list = "deb http://list.example/debian bookworm main\n";
        assert_eq!(
            find_mirror(Some(DEB822), Some(list), "bookworm").unwrap(),
            "http://deb.debian.org/debian"
        );
        assert_eq!(
            find_mirror(None, Some(list), "bookworm").unwrap(),
            "http://list.example/debian"
        );
        assert_eq!(
            find_mirror(Some("garbage"), Some(list), "bookworm").unwrap(),
            "http://list.example/debian"
        );
        let err = find_mirror(None, None, "bookworm").unwrap_err().to_string();
        assert!(err.contains("no Debian mirror found"), "{err}");
        assert!(
            err.contains(DEBIAN_SOURCES) && err.contains(SOURCES_LIST),
            "{err}"
        );
        assert!(!err.ends_with('.'), "{err}");
    }
}
