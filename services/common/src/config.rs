//! Reading configuration from environment variables with errors that name the variable, say
//! what was wrong and show an example of a good value.
//!
//! An [`Env`] collects every problem instead of stopping at the first, so a misconfigured
//! deployment is fixed in one round: `load` returns all of them at once.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The environment variable at fault.
    pub variable: String,
    /// The full message, starting with the variable name.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Every configuration problem found in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The variables at fault, in the order they were read.
    pub fn variables(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.variable.as_str()).collect()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Looks a variable up by name.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// A source of variables that records every problem met while reading it.
pub struct Env<'a> {
    lookup: Lookup<'a>,
    errors: Vec<ConfigError>,
}

impl Env<'static> {
    /// Variables of this process.
    pub fn from_process() -> Self {
        Env::from_fn(|k| std::env::var(k).ok())
    }

    /// Variables from a list of pairs (for tests).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::from_fn(move |k| map.get(k).cloned())
    }
}

impl<'a> Env<'a> {
    /// Variables from any lookup function.
    pub fn from_fn(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Env {
            lookup: Box::new(lookup),
            errors: Vec::new(),
        }
    }

    /// Variables from a map.
    pub fn from_map(map: &'a HashMap<String, String>) -> Self {
        Env::from_fn(move |k| map.get(k).cloned())
    }

    /// Runs `read` and returns its result, or every problem it recorded.
    pub fn load<T>(mut self, read: impl FnOnce(&mut Env<'a>) -> T) -> Result<T, ConfigErrors> {
        let value = read(&mut self);
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }

    /// Records a problem with `variable`; `message` should start with the variable name.
    pub fn error(&mut self, variable: &str, message: String) {
        self.errors.push(ConfigError {
            variable: variable.to_string(),
            message,
        });
    }

    /// The value of `name`, trimmed; unset and blank are the same.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// A string with a default.
    pub fn string(&mut self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_string())
    }

    /// A required URL whose scheme is one of `schemes`. Trailing slashes are removed so the
    /// value can be used as a base URL.
    pub fn required_url(&mut self, name: &str, schemes: &[&str], example: &str) -> String {
        match self.get(name) {
            Some(v) => self.check_url(name, v, schemes, example),
            None => {
                self.error(name, format!("{name} is not set; set it to {example}"));
                String::new()
            }
        }
    }

    /// An optional URL whose scheme is one of `schemes`.
    pub fn optional_url(&mut self, name: &str, schemes: &[&str], example: &str) -> Option<String> {
        let v = self.get(name)?;
        Some(self.check_url(name, v, schemes, example))
    }

    fn check_url(&mut self, name: &str, value: String, schemes: &[&str], example: &str) -> String {
        match check_url(&value, schemes) {
            Ok(()) => value.trim_end_matches('/').to_string(),
            Err(why) => {
                self.error(
                    name,
                    format!("{name}={value:?} is not a valid URL: {why}; expected something like {example}"),
                );
                String::new()
            }
        }
    }

    /// A socket address such as `0.0.0.0:8080`.
    pub fn socket_addr(&mut self, name: &str, default: &str) -> SocketAddr {
        let raw = self.string(name, default);
        match raw.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(e) => {
                self.error(
                    name,
                    format!("{name}={raw:?} is not a socket address ({e}); expected IP:PORT such as {default}"),
                );
                SocketAddr::from(([0, 0, 0, 0], 0))
            }
        }
    }

    /// An unsigned integer within `range`.
    pub fn u64_in(&mut self, name: &str, default: u64, range: RangeInclusive<u64>) -> u64 {
        let Some(raw) = self.get(name) else {
            return default;
        };
        match raw.parse::<u64>() {
            Ok(v) if range.contains(&v) => v,
            Ok(v) => {
                self.error(
                    name,
                    format!(
                        "{name}={v} is out of range; expected {} to {} (default {default})",
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
            Err(_) => {
                self.error(
                    name,
                    format!("{name}={raw:?} is not a whole number; expected e.g. {default}"),
                );
                default
            }
        }
    }

    /// A `usize` within `range`.
    pub fn usize_in(&mut self, name: &str, default: usize, range: RangeInclusive<usize>) -> usize {
        let r = (*range.start() as u64)..=(*range.end() as u64);
        usize::try_from(self.u64_in(name, default as u64, r)).unwrap_or(default)
    }

    /// A duration given in milliseconds within `range` (milliseconds).
    pub fn millis_in(
        &mut self,
        name: &str,
        default_ms: u64,
        range: RangeInclusive<u64>,
    ) -> Duration {
        Duration::from_millis(self.u64_in(name, default_ms, range))
    }

    /// One of a fixed set of words (case-insensitive); returns it in lower case.
    pub fn one_of(&mut self, name: &str, default: &str, allowed: &[&str]) -> String {
        let raw = self.string(name, default).to_ascii_lowercase();
        if allowed.contains(&raw.as_str()) {
            raw
        } else {
            self.error(
                name,
                format!(
                    "{name}={raw:?} is not allowed; expected one of: {}",
                    allowed.join(", ")
                ),
            );
            default.to_string()
        }
    }
}

/// Checks that `value` is an absolute URL with one of `schemes` and a host.
fn check_url(value: &str, schemes: &[&str]) -> Result<(), String> {
    let url = reqwest::Url::parse(value).map_err(|e| e.to_string())?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "scheme {:?} is not one of {}",
            url.scheme(),
            schemes.join(", ")
        ));
    }
    match url.host_str() {
        Some(h) if !h.is_empty() => Ok(()),
        _ => Err("it has no host".to_string()),
    }
}

/// Reads variables of this process with `read`; every problem is returned at once.
pub fn load<T>(read: impl FnOnce(&mut Env<'static>) -> T) -> Result<T, ConfigErrors> {
    Env::from_process().load(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_required_url_names_the_variable_and_an_example() {
        let err = Env::from_pairs(&[])
            .load(|e| {
                e.required_url(
                    "DATABASE_URL",
                    &["postgres", "postgresql"],
                    "postgres://user:pass@host:5432/db",
                )
            })
            .unwrap_err();
        assert_eq!(err.variables(), vec!["DATABASE_URL"]);
        assert_eq!(
            err.to_string(),
            "DATABASE_URL is not set; set it to postgres://user:pass@host:5432/db"
        );
    }

    #[test]
    fn blank_counts_as_unset() {
        let err = Env::from_pairs(&[("REDIS_URL", "  ")])
            .load(|e| e.required_url("REDIS_URL", &["redis"], "redis://host:6379"))
            .unwrap_err();
        assert!(err.to_string().contains("REDIS_URL is not set"));
    }

    #[test]
    fn wrong_scheme_and_garbage_are_refused() {
        let err = Env::from_pairs(&[("A", "http://x:1"), ("B", "not a url")])
            .load(|e| {
                e.required_url("A", &["redis"], "redis://h:6379");
                e.required_url("B", &["http"], "http://h:8080");
            })
            .unwrap_err();
        assert_eq!(err.variables(), vec!["A", "B"]);
        assert!(err.0[0]
            .message
            .contains("scheme \"http\" is not one of redis"));
        assert!(err.0[1]
            .message
            .starts_with("B=\"not a url\" is not a valid URL"));
    }

    #[test]
    fn trailing_slash_is_removed() {
        let v = Env::from_pairs(&[("U", "http://ds:8080/")])
            .load(|e| e.required_url("U", &["http"], "http://h:8080"))
            .unwrap();
        assert_eq!(v, "http://ds:8080");
    }

    #[test]
    fn numbers_are_checked_for_form_and_range() {
        let err = Env::from_pairs(&[("N", "abc"), ("M", "0"), ("OK", "7")])
            .load(|e| {
                e.u64_in("N", 5, 1..=10);
                e.u64_in("M", 5, 1..=10);
                assert_eq!(e.u64_in("OK", 5, 1..=10), 7);
                assert_eq!(e.u64_in("UNSET", 5, 1..=10), 5);
            })
            .unwrap_err();
        assert_eq!(err.variables(), vec!["N", "M"]);
        assert!(err.0[0].message.contains("is not a whole number"));
        assert!(err.0[1].message.contains("out of range; expected 1 to 10"));
    }

    #[test]
    fn socket_addresses() {
        let err = Env::from_pairs(&[("LISTEN_ADDR", "localhost:80")])
            .load(|e| e.socket_addr("LISTEN_ADDR", "0.0.0.0:8080"))
            .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("LISTEN_ADDR=\"localhost:80\" is not a socket address"));
        let ok = Env::from_pairs(&[])
            .load(|e| e.socket_addr("LISTEN_ADDR", "0.0.0.0:8080"))
            .unwrap();
        assert_eq!(ok.port(), 8080);
    }

    #[test]
    fn one_of_is_case_insensitive() {
        let v = Env::from_pairs(&[("LOG_FORMAT", "JSON")])
            .load(|e| e.one_of("LOG_FORMAT", "text", &["json", "text"]))
            .unwrap();
        assert_eq!(v, "json");
        let err = Env::from_pairs(&[("LOG_FORMAT", "yaml")])
            .load(|e| e.one_of("LOG_FORMAT", "text", &["json", "text"]))
            .unwrap_err();
        assert!(err.to_string().contains("expected one of: json, text"));
    }

    #[test]
    fn all_errors_are_reported_together() {
        let err = Env::from_pairs(&[])
            .load(|e| {
                e.required_url("X_URL", &["http"], "http://h:1");
                e.required_url("Y_URL", &["http"], "http://h:2");
            })
            .unwrap_err();
        assert_eq!(err.to_string().lines().count(), 2);
    }
}
