//! Image tags and run ids: pure formatting, plus [`Facts`], the one place that reads the user,
//! the git revision, the clock and the `IMAGE_TAG` override.
//!
//! Phase 0 rule: a run calls `host::facts::gather` (in the xtask) once and derives every reference from it; the
//! references are then carried through the plan, never generated again.

use anyhow::{bail, Result};

use crate::config::names;

/// What a run's tags are made of, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Login name, sanitised to `[A-Za-z0-9_]`.
    pub user: String,
    /// `git rev-parse --short=7 HEAD`, or `unknown` outside a git checkout.
    pub git7: String,
    /// The full revision (for the images' OCI revision label), or `unknown`.
    pub revision: String,
    /// Seconds since the epoch.
    pub unix: u64,
    /// The `IMAGE_TAG` environment variable, when set.
    pub image_tag: Option<String>,
    /// The run id: twelve random hex digits (48 bits of a v4 UUID; it selects resources for
    /// removal, so it must not collide). Its first eight are the suffix of infrastructure tags.
    pub run_id: String,
}

impl Facts {
    /// The tag of a service's own image: `{service}-{user}-{git7}-{unix}` or `IMAGE_TAG`.
    pub fn service_tag(&self, service: &str) -> String {
        match &self.image_tag {
            Some(t) => t.clone(),
            None => names::service_tag(service, &self.user, &self.git7, self.unix),
        }
    }

    /// `localhost/{service}:{service tag}`: the consumer's image reference.
    pub fn service_ref(&self, service: &str) -> String {
        format!("localhost/{service}:{}", self.service_tag(service))
    }

    /// `localhost/{infra}:{consumer}-{8hex}`: an infrastructure image built for a consumer.
    pub fn infra_ref(&self, infra: &str, consumer: &str) -> String {
        format!(
            "localhost/{infra}:{}",
            names::infra_tag(consumer, &self.run_id[..8.min(self.run_id.len())])
        )
    }
}

/// Keeps `[A-Za-z0-9_]`, replaces anything else with `_`, keeps at most
/// [`names::USER_MAX`] characters (so tags stay within what `check` allows); empty becomes
/// `unknown`.
pub fn sanitize_user(name: &str) -> String {
    let s: String = name
        .trim()
        .chars()
        .take(names::USER_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "unknown".to_string()
    } else {
        s
    }
}

/// A valid image tag that is not `latest` (test images must never be pulled).
pub fn check_tag(tag: &str) -> Result<()> {
    let valid = tag.len() <= 128
        && tag
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !valid {
        bail!("`{tag}` is not a valid image tag (letters, digits, `_`, `.`, `-`; at most 128; no leading `.` or `-`)");
    }
    if tag == "latest" {
        bail!("`latest` is refused: kind would try to pull it; use a unique tag such as ci-<sha>-<run>");
    }
    Ok(())
}

/// `2024-12-15T16:00:00Z` for unix seconds (UTC), for the OCI `created` label.
pub fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            user: "alice".into(),
            git7: "abc1234".into(),
            revision: "abc1234ffffffffffffffffffffffffffffffff0".into(),
            unix: 1_734_278_400,
            image_tag: None,
            run_id: "1884d074a1b2".into(),
        }
    }

    #[test]
    fn service_tags_follow_the_format() {
        let f = facts();
        assert_eq!(
            f.service_tag("notification"),
            "notification-alice-abc1234-1734278400"
        );
        assert_eq!(
            f.service_ref("notification"),
            "localhost/notification:notification-alice-abc1234-1734278400"
        );
    }

    #[test]
    fn image_tag_overrides_service_tags_only() {
        let f = Facts {
            image_tag: Some("ci-deadbee-42".into()),
            ..facts()
        };
        assert_eq!(f.service_tag("notification"), "ci-deadbee-42");
        assert_eq!(
            f.infra_ref("datastorage", "notification"),
            "localhost/datastorage:notification-1884d074"
        );
    }

    #[test]
    fn users_are_sanitised() {
        assert_eq!(sanitize_user("jordi.b-x"), "jordi_b_x");
        assert_eq!(sanitize_user(""), "unknown");
        assert_eq!(sanitize_user("root"), "root");
        assert_eq!(sanitize_user(&"u".repeat(40)), "u".repeat(names::USER_MAX));
    }

    #[test]
    fn tags_are_checked() {
        assert!(check_tag("ci-abc-1").is_ok());
        assert!(check_tag("latest")
            .unwrap_err()
            .to_string()
            .contains("refused"));
        assert!(check_tag("a b").is_err());
        assert!(check_tag("-x").is_err());
        assert!(check_tag(&"a".repeat(129)).is_err());
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_734_278_400), "2024-12-15T16:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
