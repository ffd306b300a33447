//! What the router tests share: requests through a router (the masking tests: on a real
//! SQLite file, and looking into the database files afterwards).

// Each test crate uses only some of these.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Sends `req` through the router; the status and the body as text.
pub async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// POSTs an ingest batch (JSON, ingest open); asserts it is answered 200.
pub async fn ingest(app: &axum::Router, batch: &Value) {
    let (s, b) = call(
        app,
        Request::post("/api/v1/ingest")
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(batch).unwrap()))
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// Opens (creating it) the SQLite database `name` in `dir`.
pub async fn open_sqlite_file(dir: &Path, name: &str) -> Arc<dyn storage::Storage> {
    let db = dir.join(name);
    storage::open(&storage::StorageConfig::new(format!(
        "sqlite://{}",
        db.display()
    )))
    .await
    .unwrap()
}

/// Asserts that no file in `dir` (the database, its journal and WAL) holds any of
/// `needles`, and that there is at least one file. Close the database first.
pub fn assert_no_file_holds<S: AsRef<str>>(dir: &Path, needles: &[S]) {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        files += 1;
        for needle in needles.iter().map(AsRef::as_ref) {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} in the database files"
            );
        }
    }
    assert!(files >= 1);
}
