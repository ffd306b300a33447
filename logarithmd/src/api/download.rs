//! The raw log download (`text/plain`): a job's lines, `\n`-terminated, streamed so that a
//! large download holds no more than two pages in memory.
//!
//! The whole log (or one stream of it) is read as text pages straight from storage
//! ([`storage::JobStore::read_text`]: the backend assembles the bytes, with no record per
//! line), the next page read while the current one is sent. A download with a filter or a
//! line limit reads whole lines through [`LineReader`] instead, to test each one.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use protocol::Stream;
use regex::bytes::Regex;
use storage::{ErrorKind, JobId, LineQuery, Storage, TextPage, TextQuery};
use tokio_util::task::AbortOnDropHandle;

use super::line_reader::LineReader;
use crate::live::MAX_JOINED_BYTES;

/// Text bytes a storage page holds at most (two are held at once: the one being sent and
/// the one read ahead).
const PAGE_BYTES: usize = 1 << 20;
/// Records of the first page (small, so the first bytes leave at once), and the most of any.
const FIRST_PAGE_RECORDS: u32 = 1000;
const MAX_PAGE_RECORDS: u32 = 20_000;
/// Bytes of whole lines gathered into one chunk on the filtered path.
const CHUNK: usize = 64 << 10;

/// What to download.
pub struct DownloadRequest {
    pub job_id: JobId,
    pub after: u64,
    pub stream: Option<Stream>,
    /// Only the lines this matches.
    pub filter: Option<Regex>,
    /// At most this many lines.
    pub limit: Option<usize>,
}

/// Streams the raw log.
pub fn raw_download(storage: Arc<dyn Storage>, req: DownloadRequest) -> Response {
    let body = if req.filter.is_none() && req.limit.is_none() {
        Body::from_stream(text_pages(storage, req.job_id, req.after, req.stream))
    } else {
        let reader = LineReader::new(storage, req.job_id, req.after, req.stream).read_ahead();
        Body::from_stream(filtered_lines(reader, req.filter, req.limit))
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

type PageRead = AbortOnDropHandle<storage::Result<TextPage>>;

/// Where a page-by-page download stands.
struct Pages {
    storage: Arc<dyn Storage>,
    query: TextQuery,
    /// The next page's read, started while the current page is sent.
    ahead: Option<PageRead>,
    done: bool,
}

impl Pages {
    fn read(&self) -> PageRead {
        let storage = self.storage.clone();
        let query = self.query;
        AbortOnDropHandle::new(tokio::spawn(async move { storage.read_text(&query).await }))
    }

    /// The next chunk of text, or `None` at the end.
    async fn next(&mut self) -> Option<storage::Result<Bytes>> {
        if self.done {
            return None;
        }
        let read = match self.ahead.take() {
            Some(read) => read,
            None => self.read(),
        };
        let mut page = match read.await {
            Ok(Ok(page)) => page,
            Ok(Err(e)) => return self.fail(e),
            Err(e) => {
                let e = storage::Error::with_source(ErrorKind::Internal, "reading the log", e);
                return self.fail(e);
            }
        };
        let more = page.is_full(&self.query);
        if let Some(last) = page.last_seq {
            self.query.lines.after_seq = last;
        }
        self.query.open_len = page.open_len;
        if more {
            // Size the next page by this one's bytes per record: about PAGE_BYTES of text.
            let per_record = page.text.len() / page.records.max(1) as usize + 1;
            let records = (PAGE_BYTES / per_record).clamp(1, MAX_PAGE_RECORDS as usize);
            self.query.lines.limit = u32::try_from(records).unwrap_or(MAX_PAGE_RECORDS);
            self.ahead = Some(self.read());
        } else {
            self.done = true;
            // A line whose rest is not stored ends with what is (as `LineReader` does).
            if page.open_len.is_some() {
                page.text.push(b'\n');
            }
        }
        Some(Ok(Bytes::from(page.text)))
    }

    fn fail(&mut self, e: storage::Error) -> Option<storage::Result<Bytes>> {
        tracing::error!(error = %e, "streaming a log download failed");
        self.done = true;
        Some(Err(e))
    }
}

fn text_pages(
    storage: Arc<dyn Storage>,
    job_id: JobId,
    after: u64,
    stream: Option<Stream>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    let pages = Pages {
        storage,
        query: TextQuery {
            lines: LineQuery {
                job_id,
                after_seq: after,
                limit: FIRST_PAGE_RECORDS,
                stream,
            },
            max_bytes: PAGE_BYTES,
            max_joined: MAX_JOINED_BYTES,
            open_len: None,
        },
        ahead: None,
        done: false,
    };
    futures::stream::unfold(pages, |mut pages| async move {
        let item = pages.next().await?;
        Some((item.map_err(std::io::Error::other), pages))
    })
}

/// Where a filtered download stands.
struct Filtered {
    reader: LineReader,
    filter: Option<Regex>,
    limit: Option<usize>,
    sent: usize,
    done: bool,
}

fn filtered_lines(
    reader: LineReader,
    filter: Option<Regex>,
    limit: Option<usize>,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> {
    let state = Filtered {
        reader,
        filter,
        limit,
        sent: 0,
        done: false,
    };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            if st.limit.is_some_and(|l| st.sent >= l) {
                st.done = true;
                return Some((Ok(chunk), st));
            }
            match st.reader.next_line().await {
                Ok(Some(l)) => {
                    if st.filter.as_ref().is_some_and(|re| !re.is_match(&l.line)) {
                        continue;
                    }
                    st.sent += 1;
                    chunk.extend_from_slice(&l.line);
                    chunk.push(b'\n');
                    if chunk.len() >= CHUNK {
                        return Some((Ok(chunk), st));
                    }
                }
                Ok(None) => {
                    st.done = true;
                    return Some((Ok(chunk), st));
                }
                Err(e) => {
                    tracing::error!(error = %e, "streaming a log download failed");
                    st.done = true;
                    return Some((Err(std::io::Error::other(e)), st));
                }
            }
        }
    })
}
