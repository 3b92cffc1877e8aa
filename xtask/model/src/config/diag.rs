//! Diagnostics: every problem found in one file, each with its line and column, printed as
//! `file:line:column: message` lines.

use std::fmt;
use std::path::{Path, PathBuf};

/// Every problem found in one file.
#[derive(Debug)]
pub struct Diagnostics {
    pub file: PathBuf,
    pub items: Vec<Diagnostic>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line and column, when the problem has a place in the file.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl Diagnostics {
    /// Problems found at byte offsets of `text`, sorted by place, duplicates removed.
    pub fn new(file: &Path, text: &str, mut found: Vec<(Option<usize>, String)>) -> Diagnostics {
        found.sort_by_key(|(o, _)| o.unwrap_or(usize::MAX));
        found.dedup();
        Diagnostics {
            file: file.to_path_buf(),
            items: found
                .into_iter()
                .map(|(o, message)| Diagnostic {
                    at: o.map(|o| line_col(text, o)),
                    message,
                })
                .collect(),
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.items.len();
        writeln!(
            f,
            "{} has {n} error{}:",
            self.file.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for d in &self.items {
            match d.at {
                Some((l, c)) => writeln!(f, "  {}:{l}:{c}: {}", self.file.display(), d.message)?,
                None => writeln!(f, "  {}: {}", self.file.display(), d.message)?,
            }
        }
        write!(
            f,
            "fix these in {} and run `cargo xtask check`",
            self.file.display()
        )
    }
}

impl std::error::Error for Diagnostics {}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
