//! No TiDB server can run here, so this check reads the whole schema and query set the
//! MySQL backend sends (every string literal in `storage/src`, the migrations included)
//! and refuses the MySQL features TiDB does not have or only accepts as no-ops (TiDB's
//! "MySQL Compatibility" page): foreign keys enforced only since 6.6, triggers, stored
//! procedures and functions, events, FULLTEXT and SPATIAL indexes, `LOCK TABLES`,
//! `LOCK IN SHARE MODE`, `SQL_CALC_FOUND_ROWS`, XA, `JSON_TABLE`, CHECK constraints (ignored
//! before 7.2), and `AUTO_INCREMENT` keys (allowed by TiDB but a write hot spot; see
//! docs/storage.md "TiDB"). What it cannot check: behaviour (optimistic conflicts,
//! transaction size limits), which docs/storage.md describes.

use std::path::{Path, PathBuf};

/// (pattern, why), matched on upper-cased SQL text.
const REFUSED: &[(&str, &str)] = &[
    (
        "FOREIGN KEY",
        "foreign keys are not enforced before TiDB 6.6",
    ),
    (
        " REFERENCES ",
        "foreign keys are not enforced before TiDB 6.6",
    ),
    ("CREATE TRIGGER", "TiDB has no triggers"),
    ("CREATE PROCEDURE", "TiDB has no stored procedures"),
    ("CREATE FUNCTION", "TiDB has no stored functions"),
    ("CREATE EVENT", "TiDB has no events"),
    ("FULLTEXT", "FULLTEXT indexes are not supported"),
    ("SPATIAL", "spatial indexes and types are not supported"),
    ("LOCK TABLES", "LOCK TABLES is a no-op by default"),
    (
        "LOCK IN SHARE MODE",
        "refused unless tidb_enable_noop_functions",
    ),
    (
        "SQL_CALC_FOUND_ROWS",
        "refused unless tidb_enable_noop_functions",
    ),
    ("FOUND_ROWS()", "not supported"),
    ("XA ", "XA transactions are not supported"),
    ("JSON_TABLE", "not supported"),
    ("CHECK (", "CHECK constraints are ignored before TiDB 7.2"),
    (
        "AUTO_INCREMENT",
        "consecutive keys make a write hot spot on TiKV",
    ),
    ("ENGINE=MYISAM", "TiDB has only TiKV/TiFlash"),
    ("SAVEPOINT", "not before TiDB 6.2"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The contents of the string literals of a Rust file (plain and raw), joined where a
/// literal continues on the next line with `\`.
fn literals(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = src.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // Skip line comments: prose may name what the SQL avoids.
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if b[i] == b'\'' {
            // A char literal ('"') or a lifetime: skip the quote and what it holds.
            if b.get(i + 2) == Some(&b'\'') {
                i += 3;
            } else if b.get(i + 1) == Some(&b'\\') && b.get(i + 3) == Some(&b'\'') {
                i += 4;
            } else {
                i += 1;
            }
            continue;
        }
        if b[i] == b'"' {
            let mut s = String::new();
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' && i + 1 < b.len() {
                    s.push(' ');
                    i += 2;
                    continue;
                }
                s.push(b[i] as char);
                i += 1;
            }
            out.push(s);
        }
        i += 1;
    }
    out
}

fn is_sql(s: &str) -> bool {
    let u = s.to_uppercase();
    [
        "SELECT ", "INSERT ", "UPDATE ", "DELETE ", "CREATE ", "ALTER ", "REPLACE ",
    ]
    .iter()
    .any(|k| u.contains(k))
}

#[test]
fn the_schema_and_queries_use_nothing_tidb_lacks() {
    let src_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src_dir, &mut files);
    files.sort();
    assert!(files.len() >= 5, "storage sources not found: {files:?}");
    let mut statements = 0;
    let mut refused = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap_or_default();
        // The SQLite backend's SQL (storage/src/sqlite/) never reaches TiDB.
        let rel = f.strip_prefix(&src_dir).unwrap_or(f);
        if rel
            .components()
            .any(|c| c.as_os_str().to_string_lossy().starts_with("sqlite"))
        {
            continue;
        }
        for lit in literals(&src).iter().filter(|l| is_sql(l)) {
            statements += 1;
            let u = lit.to_uppercase();
            for (pat, why) in REFUSED {
                if u.contains(pat) {
                    refused.push(format!("{}: {pat} ({why}): {lit}", f.display()));
                }
            }
        }
    }
    assert!(statements >= 30, "only {statements} SQL statements found");
    assert!(refused.is_empty(), "{}", refused.join("\n"));
}

#[test]
fn the_filter_refuses_what_it_should() {
    let src = r#"const A: &str = "CREATE TABLE t (id BIGINT AUTO_INCREMENT, PRIMARY KEY (id))";
// A comment may say FOREIGN KEY.
const B: &str = "SELECT * FROM t LOCK IN SHARE MODE";"#;
    let lits: Vec<String> = literals(src).into_iter().filter(|l| is_sql(l)).collect();
    assert_eq!(lits.len(), 2);
    let hits: Vec<&str> = REFUSED
        .iter()
        .filter(|(p, _)| lits.iter().any(|l| l.to_uppercase().contains(p)))
        .map(|(p, _)| *p)
        .collect();
    assert_eq!(hits, vec!["LOCK IN SHARE MODE", "AUTO_INCREMENT"]);
}
