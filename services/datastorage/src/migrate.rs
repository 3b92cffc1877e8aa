//! `datastorage migrate`: applies `NNNN_description.sql` files in numeric order.
//!
//! - Each file runs in its own transaction, together with its row in `schema_migrations`
//!   (version, name, SHA-256 checksum, time applied).
//! - Idempotent: files already applied are skipped; a second run applies nothing and says so.
//! - Refuses, before applying anything, when: a file name does not follow the pattern, two files
//!   share a number, a number is missing (gap), an applied file's checksum changed (edited after
//!   it was applied: both checksums are named), an applied migration's file is gone, or an
//!   applied file was renamed.
//! - A PostgreSQL advisory lock serialises concurrent migrators (the second waits, then finds
//!   everything applied).

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use tokio_postgres::NoTls;

/// Advisory lock key: an arbitrary constant shared by every migrator of this schema.
const LOCK_KEY: i64 = 0x6b75_6265_6d69_6772; // "kubemigr"

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The number before the first `_`.
    pub version: i64,
    /// The file name, e.g. `0001_audit_events.sql`.
    pub name: String,
    /// Hex SHA-256 of the file's bytes.
    pub checksum: String,
    /// The SQL text.
    pub sql: String,
}

/// Hex SHA-256 of `bytes`.
pub fn checksum(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses `NNNN_description.sql` into its number. `Ok(None)` for files that are not `.sql`
/// (ignored); an error for `.sql` files that do not follow the pattern.
pub fn parse_file_name(name: &str) -> Result<Option<i64>, String> {
    let Some(stem) = name.strip_suffix(".sql") else {
        return Ok(None);
    };
    let pattern = "expected NNNN_description.sql (digits, '_', then letters, digits, '_' or '-')";
    let Some((number, description)) = stem.split_once('_') else {
        return Err(format!("{name}: {pattern}"));
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{name}: {pattern}"));
    }
    if description.is_empty()
        || !description
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!("{name}: {pattern}"));
    }
    let version: i64 = number
        .parse()
        .map_err(|_| format!("{name}: the number {number} is too large"))?;
    if version == 0 {
        return Err(format!("{name}: numbering starts at 1"));
    }
    Ok(Some(version))
}

/// Orders parsed files and checks there are no duplicates or gaps (1, 2, 3, ...).
pub fn order(files: Vec<Migration>) -> Result<Vec<Migration>, String> {
    let mut by_version: BTreeMap<i64, Migration> = BTreeMap::new();
    for m in files {
        if let Some(other) = by_version.get(&m.version) {
            return Err(format!(
                "duplicate migration number {}: {} and {}",
                m.version, other.name, m.name
            ));
        }
        by_version.insert(m.version, m);
    }
    for (expected, version) in (1i64..).zip(by_version.keys()) {
        if *version != expected {
            let next = &by_version[version].name;
            return Err(format!(
                "migration number {expected} is missing (gap before {next}); numbers must be 1, 2, 3, ... without gaps"
            ));
        }
    }
    Ok(by_version.into_values().collect())
}

/// Reads and orders the migrations of `dir`.
pub fn load_dir(dir: &Path) -> Result<Vec<Migration>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read migrations folder {}", dir.display()))?;
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match parse_file_name(&name) {
            Ok(None) => continue,
            Err(e) => problems.push(e),
            Ok(Some(version)) => {
                let path = entry.path();
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let sql = String::from_utf8(bytes.clone())
                    .map_err(|_| anyhow::anyhow!("{} is not UTF-8", path.display()))?;
                files.push(Migration {
                    version,
                    name,
                    checksum: checksum(&bytes),
                    sql,
                });
            }
        }
    }
    if !problems.is_empty() {
        problems.sort();
        bail!(
            "bad migration file names in {}:\n  {}",
            dir.display(),
            problems.join("\n  ")
        );
    }
    if files.is_empty() {
        bail!(
            "no migrations (NNNN_description.sql) found in {}",
            dir.display()
        );
    }
    order(files).map_err(|e| anyhow::anyhow!("{e} (in {})", dir.display()))
}

/// A row of `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Version number.
    pub version: i64,
    /// File name when applied.
    pub name: String,
    /// Checksum when applied.
    pub checksum: String,
}

/// Compares the files with what the database has applied; returns the files still to apply.
pub fn plan<'a>(
    files: &'a [Migration],
    applied: &[Applied],
    dir: &Path,
) -> Result<Vec<&'a Migration>, String> {
    let by_version: BTreeMap<i64, &Migration> = files.iter().map(|m| (m.version, m)).collect();
    for a in applied {
        let Some(file) = by_version.get(&a.version) else {
            return Err(format!(
                "migration {} ({}) is recorded as applied but its file is missing from {}",
                a.version,
                a.name,
                dir.display()
            ));
        };
        if file.name != a.name {
            return Err(format!(
                "migration {} was applied as {} but the file is now named {}; renaming applied migrations is not allowed",
                a.version, a.name, file.name
            ));
        }
        if file.checksum != a.checksum {
            return Err(format!(
                "{} was edited after it was applied: applied checksum {}, file checksum {}; \
                 add a new migration instead of changing an applied one",
                dir.join(&file.name).display(),
                a.checksum,
                file.checksum
            ));
        }
    }
    let done: std::collections::BTreeSet<i64> = applied.iter().map(|a| a.version).collect();
    Ok(files
        .iter()
        .filter(|m| !done.contains(&m.version))
        .collect())
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Files applied by this run.
    pub applied: Vec<String>,
    /// Files that were already applied.
    pub already_applied: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.applied.is_empty() {
            write!(
                f,
                "database is up to date: {} migration(s) already applied, nothing to do",
                self.already_applied
            )
        } else {
            write!(
                f,
                "applied {} migration(s): {} ({} were already applied)",
                self.applied.len(),
                self.applied.join(", "),
                self.already_applied
            )
        }
    }
}

/// Applies the migrations of `dir` to the database at `database_url`.
pub async fn run(database_url: &str, dir: &Path) -> Result<Report> {
    let files = load_dir(dir)?;
    let (mut client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .with_context(|| {
            format!(
                "cannot connect to PostgreSQL at {}",
                redact_pg(database_url)
            )
        })?;
    let conn_task = tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "migration connection closed with an error");
        }
    });
    let result = apply(&mut client, &files, dir).await;
    drop(client);
    let _ = conn_task.await;
    result
}

async fn apply(
    client: &mut tokio_postgres::Client,
    files: &[Migration],
    dir: &Path,
) -> Result<Report> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .context("cannot take the migration advisory lock")?;
    let result = apply_locked(client, files, dir).await;
    // Released with the session anyway; unlock explicitly to be tidy.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn apply_locked(
    client: &mut tokio_postgres::Client,
    files: &[Migration],
    dir: &Path,
) -> Result<Report> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version    BIGINT PRIMARY KEY,
                name       TEXT NOT NULL,
                checksum   TEXT NOT NULL,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await
        .context("cannot create schema_migrations")?;
    let rows = client
        .query(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .context("cannot read schema_migrations")?;
    let mut applied = Vec::with_capacity(rows.len());
    for r in &rows {
        applied.push(Applied {
            version: r
                .try_get(0)
                .context("schema_migrations.version is not a bigint")?,
            name: r.try_get(1).context("schema_migrations.name is not text")?,
            checksum: r
                .try_get(2)
                .context("schema_migrations.checksum is not text")?,
        });
    }
    let todo = plan(files, &applied, dir).map_err(anyhow::Error::msg)?;
    let mut report = Report {
        applied: Vec::new(),
        already_applied: applied.len(),
    };
    for m in todo {
        let tx = client
            .transaction()
            .await
            .context("cannot begin a transaction")?;
        tx.batch_execute(&m.sql).await.map_err(|e| {
            anyhow::anyhow!("{} failed: {}", dir.join(&m.name).display(), pg_error(&e))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &m.checksum],
        )
        .await
        .with_context(|| format!("cannot record {} in schema_migrations", m.name))?;
        tx.commit()
            .await
            .with_context(|| format!("cannot commit {}", m.name))?;
        tracing::info!(migration = %m.name, "applied");
        report.applied.push(m.name.clone());
    }
    Ok(report)
}

/// A PostgreSQL error with its server message and position when there is one.
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            s
        }
        None => svc_common::http::error_chain(e),
    }
}

/// The URL with the password hidden.
pub fn redact_pg(url: &str) -> String {
    svc_common::redis_conn::redact(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(version: i64, name: &str, sql: &str) -> Migration {
        Migration {
            version,
            name: name.to_string(),
            checksum: checksum(sql.as_bytes()),
            sql: sql.to_string(),
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(parse_file_name("0001_audit_events.sql"), Ok(Some(1)));
        assert_eq!(parse_file_name("12_add-index.sql"), Ok(Some(12)));
        assert_eq!(parse_file_name("README.md"), Ok(None));
        assert_eq!(parse_file_name("0001_x.sql.bak"), Ok(None));
        for bad in [
            "audit.sql",
            "0001.sql",
            "0001_.sql",
            "_x.sql",
            "x1_y.sql",
            "0001_a b.sql",
            "0000_zero.sql",
            "99999999999999999999_x.sql",
        ] {
            assert!(parse_file_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ordering_is_numeric() {
        let files = vec![
            m(10, "10_j.sql", ""),
            m(2, "2_b.sql", ""),
            m(1, "0001_a.sql", ""),
        ];
        let mut all = files.clone();
        for v in 3..10 {
            all.push(m(v, &format!("{v}_x.sql"), ""));
        }
        let ordered = order(all).unwrap();
        let versions: Vec<i64> = ordered.iter().map(|m| m.version).collect();
        assert_eq!(versions, (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn duplicates_and_gaps_are_refused() {
        let err = order(vec![m(1, "0001_a.sql", ""), m(1, "01_b.sql", "")]).unwrap_err();
        assert!(err.contains("duplicate migration number 1"), "{err}");
        assert!(err.contains("0001_a.sql") && err.contains("01_b.sql"));
        let err = order(vec![m(1, "0001_a.sql", ""), m(3, "0003_c.sql", "")]).unwrap_err();
        assert!(
            err.contains("number 2 is missing (gap before 0003_c.sql)"),
            "{err}"
        );
        let err = order(vec![m(2, "0002_b.sql", "")]).unwrap_err();
        assert!(err.contains("number 1 is missing"), "{err}");
    }

    #[test]
    fn checksum_is_sha256_hex() {
        assert_eq!(
            checksum(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn plan_skips_applied_and_refuses_edits() {
        let dir = Path::new("/m");
        let files = vec![m(1, "0001_a.sql", "A"), m(2, "0002_b.sql", "B")];
        let applied = vec![Applied {
            version: 1,
            name: "0001_a.sql".into(),
            checksum: checksum(b"A"),
        }];
        let todo = plan(&files, &applied, dir).unwrap();
        assert_eq!(todo.iter().map(|m| m.version).collect::<Vec<_>>(), vec![2]);

        let edited = vec![Applied {
            version: 1,
            name: "0001_a.sql".into(),
            checksum: checksum(b"old"),
        }];
        let err = plan(&files, &edited, dir).unwrap_err();
        assert!(err.contains("/m/0001_a.sql was edited"), "{err}");
        assert!(
            err.contains(&checksum(b"old")) && err.contains(&checksum(b"A")),
            "{err}"
        );

        let renamed = vec![Applied {
            version: 1,
            name: "0001_old.sql".into(),
            checksum: checksum(b"A"),
        }];
        assert!(plan(&files, &renamed, dir)
            .unwrap_err()
            .contains("renaming"));

        let unknown = vec![Applied {
            version: 3,
            name: "0003_c.sql".into(),
            checksum: "x".into(),
        }];
        assert!(plan(&files, &unknown, dir)
            .unwrap_err()
            .contains("file is missing"));
    }

    #[test]
    fn load_dir_reads_orders_and_reports_bad_names() {
        let dir = std::env::temp_dir().join(format!("ds-migr-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("0002_b.sql"), "SELECT 2;").unwrap();
        std::fs::write(dir.join("0001_a.sql"), "SELECT 1;").unwrap();
        std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let files = load_dir(&dir).unwrap();
        assert_eq!(
            files.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
            vec!["0001_a.sql", "0002_b.sql"]
        );
        assert_eq!(files[0].checksum, checksum(b"SELECT 1;"));
        std::fs::write(dir.join("bad.sql"), "").unwrap();
        let err = load_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("bad.sql: expected NNNN_description.sql"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let err = load_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("cannot read migrations folder"), "{err}");
    }

    #[test]
    fn the_shipped_migrations_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
        let files = load_dir(&dir).unwrap();
        assert_eq!(files[0].name, "0001_audit_events.sql");
    }

    #[test]
    fn report_wording() {
        let r = Report {
            applied: vec![],
            already_applied: 2,
        };
        assert_eq!(
            r.to_string(),
            "database is up to date: 2 migration(s) already applied, nothing to do"
        );
        let r = Report {
            applied: vec!["0003_c.sql".into()],
            already_applied: 2,
        };
        assert!(r
            .to_string()
            .starts_with("applied 1 migration(s): 0003_c.sql"));
    }
}
