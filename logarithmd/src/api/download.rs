//! The raw log download (`text/plain`): a job's lines, `\n`-terminated, streamed so that a
//! large download holds no more than two pages in memory.
//!
//! The whole log (or one stream of it) is read as text pages straight from storage
//! ([`storage::JobStore::read_text`]: the backend assembles the bytes, with no record per
//! line), the next page read while the current one is sent. A download with a filter or a
//! line limit reads whole lines through [`LineReader`] instead, to test each one.
//!
//! Both read at most `max_download_lines` lines for at most `max_stream_duration`
//! ([`ReadBudget`]); stopped by either with lines left, the download ends with a
//! [`super::read_limits::Limit::trailer`] line that says where to continue (after the last
//! whole line sent).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use protocol::Stream;
use regex::bytes::Regex;
use storage::{ErrorKind, JobId, LineQuery, Storage, TextPage, TextQuery};
use tokio_util::task::AbortOnDropHandle;

use super::line_reader::LineReader;
use super::read_limits::{Limit, ReadBudget};
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
    pub budget: ReadBudget,
}

/// Streams the raw log.
pub fn raw_download(storage: Arc<dyn Storage>, req: DownloadRequest) -> Response {
    let body = if req.filter.is_none() && req.limit.is_none() {
        Body::from_stream(text_pages(storage, req))
    } else {
        Body::from_stream(filtered_lines(storage, req))
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
    budget: ReadBudget,
    /// The seq of the record that ended the last whole line sent.
    last_line_seq: u64,
    done: bool,
}

impl Pages {
    fn read(&self) -> PageRead {
        let storage = self.storage.clone();
        let mut query = self.query;
        // Never more records than lines left in the budget (a record ends a line at most).
        query.lines.limit = query.lines.limit.min(self.records_left().max(1));
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
        let more = page.is_full(&self.query) || page.records >= self.records_left();
        self.budget.count_many(page.lines);
        if let Some(limit) = self.budget.reached().filter(|_| more) {
            // Stop after the last whole line, if lines are left. A line already begun on
            // an earlier page (longer than a page) is ended where it stands instead.
            let begun = page.complete_len == 0 && self.query.open_len.is_some();
            let after = if begun {
                page.text.push(b'\n');
                page.last_seq.unwrap_or(self.last_line_seq)
            } else {
                page.text.truncate(page.complete_len);
                page.last_line_seq.unwrap_or(self.last_line_seq)
            };
            self.done = true;
            if self.any_after(after).await {
                page.text.extend_from_slice(&limit.trailer(after, false));
            }
            return Some(Ok(Bytes::from(page.text)));
        }
        if let Some(seq) = page.last_line_seq {
            self.last_line_seq = seq;
        }
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

    /// Records a page may read within the line budget (a record ends a line at most).
    fn records_left(&self) -> u32 {
        u32::try_from(self.budget.lines_left()).unwrap_or(u32::MAX)
    }

    /// Whether a record is stored after `seq` (so a download stopped there has more).
    async fn any_after(&self, seq: u64) -> bool {
        let mut query = self.query;
        query.lines.after_seq = seq;
        query.lines.limit = 1;
        // One record is enough to know: no page-sized buffer for it.
        query.max_bytes = 1;
        query.open_len = None;
        match self.storage.read_text(&query).await {
            Ok(page) => page.records > 0,
            // Say there is more: the client continues and sees.
            Err(_) => true,
        }
    }

    fn fail(&mut self, e: storage::Error) -> Option<storage::Result<Bytes>> {
        tracing::error!(error = %e, "streaming a log download failed");
        self.done = true;
        Some(Err(e))
    }
}

fn text_pages(
    storage: Arc<dyn Storage>,
    req: DownloadRequest,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    let pages = Pages {
        storage,
        query: TextQuery {
            lines: LineQuery {
                job_id: req.job_id,
                after_seq: req.after,
                limit: FIRST_PAGE_RECORDS,
                stream: req.stream,
            },
            max_bytes: PAGE_BYTES,
            max_joined: MAX_JOINED_BYTES,
            open_len: None,
        },
        ahead: None,
        budget: req.budget,
        last_line_seq: req.after,
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
    budget: ReadBudget,
    /// The last record read (sent or filtered out): where a continuation starts.
    last_seq: u64,
    sent: usize,
    done: bool,
}

fn filtered_lines(
    storage: Arc<dyn Storage>,
    req: DownloadRequest,
) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> {
    let state = Filtered {
        reader: LineReader::new(storage, req.job_id, req.after, req.stream).read_ahead(),
        filter: req.filter,
        limit: req.limit,
        budget: req.budget,
        last_seq: req.after,
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
            let stop: Option<Limit> = st.budget.reached();
            let next = st.reader.next_line().await;
            if let (Some(limit), Ok(Some(_))) = (stop, &next) {
                // Lines are left: say which limit stopped the download and where to go on.
                st.done = true;
                chunk.extend_from_slice(&limit.trailer(st.last_seq, false));
                return Some((Ok(chunk), st));
            }
            match next {
                Ok(Some(l)) => {
                    st.budget.count();
                    st.last_seq = l.last_seq;
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
