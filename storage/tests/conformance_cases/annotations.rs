//! Job annotations (schema version 7), on both backends: stored with the job's metadata,
//! replaced with it, shown by reads and listings, and the migration from version 6.

use super::*;

fn annotated(name: &str, annotations: &[(&str, &str)]) -> JobMeta {
    let mut m = meta(name, &[("team", "a")], 0);
    m.annotations = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    m
}

/// Undoes the migrations after `version` as a database of that version would be (version
/// 7 added a column that SQLite cannot add twice), so opening applies them again.
pub async fn back_to_version(t: &Target, version: i64) {
    if version < 7 {
        t.raw_exec("ALTER TABLE jobs DROP COLUMN annotations_json")
            .await;
    }
    t.raw_exec(&format!(
        "DELETE FROM schema_migrations WHERE version > {version}"
    ))
    .await;
}

pub async fn annotations_round_trip_and_migrate(t: &Target) {
    let (annotated_id, plain_id) = {
        let s = &*t.open().await;
        let c = cid("ann");
        let id = job_id_for_container(&c);
        let long = "x".repeat(60_000);
        let given = [
            ("kubernetes.io/change-cause", "deploy \u{e9}t\u{e9} \"v2\""),
            ("example.com/notes", long.as_str()),
            ("empty", ""),
        ];
        let mut w = write(&c);
        w.meta = Some(annotated("ann", &given));
        w.lines = text_lines(1..=2);
        apply(s, &batch(vec![w])).await;
        let j = job(s, id).await;
        assert_eq!(
            j.annotations,
            annotated("ann", &given).annotations,
            "[{}]",
            t.name
        );
        assert_eq!(j.labels["team"], "a");
        // Listings show them too.
        let listed = s
            .list_jobs(&JobQuery {
                labels: vec![("team".into(), "a".into())],
                limit: 10,
                ..JobQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].annotations.len(), 3);
        assert_eq!(listed[0].annotations["example.com/notes"].len(), 60_000);

        // Metadata of the same run sent again replaces them, as it replaces labels.
        let mut w = write(&c);
        w.meta = Some(annotated("ann", &[("only", "this")]));
        apply(s, &batch(vec![w])).await;
        let j = job(s, id).await;
        assert_eq!(
            j.annotations.into_iter().collect::<Vec<_>>(),
            vec![("only".to_string(), "this".to_string())]
        );
        assert_eq!(j.line_count, 2);

        // A Docker container's job has none, stored as NULL.
        let plain = cid("ann-plain");
        let mut w = write(&plain);
        w.meta = Some(meta("plain", &[], 0));
        apply(s, &batch(vec![w])).await;
        let plain_id = job_id_for_container(&plain);
        assert!(job(s, plain_id).await.annotations.is_empty());
        assert_eq!(
            t.raw_count(&format!(
                "SELECT COUNT(*) FROM jobs WHERE id = {plain_id} AND annotations_json IS NULL"
            ))
            .await,
            1
        );
        (id, plain_id)
    };

    // A version 6 database: no column. Opening adds it; the jobs read back without
    // annotations, and new metadata stores them.
    back_to_version(t, 6).await;
    let s = &*t.open().await;
    assert_eq!(
        t.raw_count("SELECT MAX(version) FROM schema_migrations")
            .await,
        7
    );
    let j = job(s, annotated_id).await;
    assert!(j.annotations.is_empty(), "[{}]", t.name);
    assert_eq!((j.name.as_str(), j.line_count), ("ann", 2));
    assert!(job(s, plain_id).await.annotations.is_empty());
    let c = cid("ann");
    let mut w = write(&c);
    w.meta = Some(annotated("ann", &[("after", "upgrade")]));
    apply(s, &batch(vec![w])).await;
    assert_eq!(job(s, annotated_id).await.annotations["after"], "upgrade");
}
