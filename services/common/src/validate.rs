//! Validation of JSON request bodies that names every offending field at once: [`Fields`]
//! reads the fields of one object and records each problem as a [`FieldError`].

use crate::http::FieldError;
use serde_json::{Map, Value};

/// A JSON value's kind, for messages: `null`, `a boolean`, `a number`, `a string`, `an array`
/// or `an object`.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The fields of one JSON object under validation, and the problems found so far, in order.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
    errors: Vec<FieldError>,
}

impl<'a> Fields<'a> {
    /// The fields of a request body; a body that is not an object is refused as a whole
    /// (`request body`: `must be a JSON object, got ...`).
    pub fn of(value: &'a Value) -> Result<Self, Vec<FieldError>> {
        Self::prefixed(value, "")
    }

    /// Like [`Fields::of`] for an object inside the body: problems name `{prefix}{field}` (e.g.
    /// `events[3].event_type`), and a value that is not an object is named by the prefix
    /// without its trailing dot.
    pub fn prefixed(value: &'a Value, prefix: &str) -> Result<Self, Vec<FieldError>> {
        let Some(obj) = value.as_object() else {
            let what = if prefix.is_empty() {
                "request body"
            } else {
                prefix.trim_end_matches('.')
            };
            return Err(vec![FieldError::new(
                what,
                format!("must be a JSON object, got {}", kind(value)),
            )]);
        };
        Ok(Fields {
            obj,
            prefix: prefix.to_string(),
            errors: Vec::new(),
        })
    }

    /// The value of `name`, if present (it may be null).
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name)
    }

    /// Records a problem with the field `name`.
    pub fn error(&mut self, name: &str, message: impl Into<String>) {
        let field = format!("{}{name}", self.prefix);
        self.errors.push(FieldError::new(field, message));
    }

    /// A required string, not blank, of at most `max` characters; empty when refused.
    pub fn required_string(&mut self, name: &str, max: usize) -> String {
        self.string(name, max, false)
    }

    /// A required string of at most `max` characters that may be empty or blank.
    pub fn required_string_or_empty(&mut self, name: &str, max: usize) -> String {
        self.string(name, max, true)
    }

    fn string(&mut self, name: &str, max: usize, allow_blank: bool) -> String {
        match self.get(name) {
            None | Some(Value::Null) => self.error(name, "is required"),
            Some(Value::String(s)) if !allow_blank && s.trim().is_empty() => {
                self.error(name, "must not be empty");
            }
            Some(Value::String(s)) if s.chars().count() > max => {
                self.error(name, format!("must be at most {max} characters"));
            }
            Some(Value::String(s)) => return s.clone(),
            Some(other) => self.error(name, format!("must be a string, got {}", kind(other))),
        }
        String::new()
    }

    /// A required word out of `choices`, e.g. `[("info", Severity::Info), ...]`; `None` when
    /// refused. Messages list the allowed words.
    pub fn one_of<T: Copy>(&mut self, name: &str, choices: &[(&str, T)]) -> Option<T> {
        let allowed: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
        self.choice(name, &allowed, |s| {
            choices
                .iter()
                .find(|(word, _)| *word == s)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    format!(
                        "{s:?} is not allowed; allowed values: {}",
                        allowed.join(", ")
                    )
                })
        })
    }

    /// A required string turned into a value by `parse`, whose error is the message; `allowed`
    /// (the words `parse` takes) is named when the field is missing or not a string. `None`
    /// when refused.
    pub fn choice<T>(
        &mut self,
        name: &str,
        allowed: &[&str],
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match self.get(name) {
            Some(Value::String(s)) => match parse(s) {
                Ok(v) => return Some(v),
                Err(message) => self.error(name, message),
            },
            None | Some(Value::Null) => self.error(
                name,
                format!("is required; allowed values: {}", allowed.join(", ")),
            ),
            Some(other) => self.error(
                name,
                format!(
                    "must be a string ({}), got {}",
                    or_list(allowed),
                    kind(other)
                ),
            ),
        }
        None
    }

    /// Every problem recorded, in the order found; empty when the object is valid.
    pub fn into_errors(self) -> Vec<FieldError> {
        self.errors
    }
}

/// `a, b or c`.
fn or_list(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn messages(errors: &[FieldError]) -> Vec<(&str, &str)> {
        errors
            .iter()
            .map(|e| (e.field.as_str(), e.message.as_str()))
            .collect()
    }

    #[test]
    fn not_an_object_is_named_by_the_prefix() {
        let e = Fields::of(&json!([1])).err().unwrap();
        assert_eq!(
            messages(&e),
            vec![("request body", "must be a JSON object, got an array")]
        );
        let e = Fields::prefixed(&json!(7), "events[2].").err().unwrap();
        assert_eq!(
            messages(&e),
            vec![("events[2]", "must be a JSON object, got a number")]
        );
    }

    #[test]
    fn strings_are_required_bounded_and_typed() {
        let v = json!({"ok": " x ", "blank": "  ", "long": "abcd", "num": 1, "null": null});
        let mut f = Fields::prefixed(&v, "p.").unwrap();
        assert_eq!(f.required_string("ok", 3), " x ");
        assert_eq!(f.required_string("blank", 3), "");
        assert_eq!(f.required_string_or_empty("blank", 3), "  ");
        assert_eq!(f.required_string("long", 3), "");
        assert_eq!(f.required_string("num", 3), "");
        assert_eq!(f.required_string("null", 3), "");
        assert_eq!(f.required_string_or_empty("missing", 3), "");
        f.error("other", "custom");
        assert_eq!(
            messages(&f.into_errors()),
            vec![
                ("p.blank", "must not be empty"),
                ("p.long", "must be at most 3 characters"),
                ("p.num", "must be a string, got a number"),
                ("p.null", "is required"),
                ("p.missing", "is required"),
                ("p.other", "custom"),
            ]
        );
    }

    #[test]
    fn words_out_of_a_fixed_set() {
        let choices = [("a", 1), ("b", 2), ("c", 3)];
        let v = json!({"good": "b", "bad": "B", "num": 5});
        let mut f = Fields::of(&v).unwrap();
        assert_eq!(f.one_of("good", &choices), Some(2));
        assert_eq!(f.one_of("bad", &choices), None);
        assert_eq!(f.one_of("num", &choices), None);
        assert_eq!(f.one_of("missing", &choices), None);
        assert_eq!(
            f.choice("bad", &["x", "y"], |_| Err::<u8, _>("no".to_string())),
            None
        );
        assert_eq!(
            messages(&f.into_errors()),
            vec![
                ("bad", "\"B\" is not allowed; allowed values: a, b, c"),
                ("num", "must be a string (a, b or c), got a number"),
                ("missing", "is required; allowed values: a, b, c"),
                ("bad", "no"),
            ]
        );
        assert_eq!(or_list(&["x", "y"]), "x or y");
        assert_eq!(or_list(&["x"]), "x");
    }
}
