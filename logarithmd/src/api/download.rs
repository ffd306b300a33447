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

use std::collections::VecDeque;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use protocol::Stream;
use regex::bytes::Regex;
use storage::{ErrorKind, JobId, LineQuery, Storage, TextPage, TextQuery};
use tokio::sync::{Semaphore, SemaphorePermit};
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
    /// The job's highest stored seq when the download began.
    pub last_seq: u64,
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

/// Downloads that may read several pages at once (see [`Pages`]): a bound on the pages
/// held beyond the usual two, whatever the number of downloads.
static PARALLEL_DOWNLOADS: Semaphore = Semaphore::const_new(2);
/// Page reads in flight for a download that holds a [`PARALLEL_DOWNLOADS`] permit.
const PARALLEL_READS: usize = 3;

/// One page read in flight, with the query it was started with.
struct Ahead {
    query: TextQuery,
    read: PageRead,
}

/// Where a page-by-page download stands.
///
/// The first page is read alone (small, so the first bytes leave at once). After it, a
/// download whose remaining lines fit its line budget reads the seqs up to the job's last
/// stored seq (when the download began) as ranges of about a page each, [`PARALLEL_READS`]
/// at once on the read pool, while the page before is sent. A range read before the one it
/// follows assumes no line open where it starts; if one was, it is read again (rare: a
/// line cut into records across the boundary). A range cut short by the byte cap goes on
/// from where it stopped. Then pages follow one after another, one read ahead, until one
/// is not full (lines committed during the download are included).
struct Pages {
    storage: Arc<dyn Storage>,
    /// The job, stream and caps of every read.
    base: TextQuery,
    /// Where the next page to send starts, and the length of the line open there.
    after: u64,
    open_len: Option<usize>,
    /// Reads in flight, in seq order.
    ahead: VecDeque<Ahead>,
    /// Ranges are started up to `known_last`; `issued_to` is where the next one starts.
    issued_to: u64,
    known_last: u64,
    /// Seqs a range covers (and records a sequential page reads), sized to a page of text.
    span: u32,
    /// Held while ranges are read in parallel.
    parallel: Option<SemaphorePermit<'static>>,
    budget: ReadBudget,
    /// The seq of the record that ended the last whole line sent.
    last_line_seq: u64,
    done: bool,
}

impl Pages {
    fn start(&self, query: TextQuery) -> Ahead {
        let storage = self.storage.clone();
        let read =
            AbortOnDropHandle::new(tokio::spawn(async move { storage.read_text(&query).await }));
        Ahead { query, read }
    }

    /// A read of the records after `after` (up to `until`), assuming `open_len` there.
    fn query(&self, after: u64, until: Option<u64>, open_len: Option<usize>) -> TextQuery {
        let mut query = self.base;
        query.lines.after_seq = after;
        // Never more records than lines left in the budget (a record ends a line at most).
        query.lines.limit = self.span.min(self.records_left().max(1));
        query.until_seq = until;
        query.open_len = open_len;
        query
    }

    /// Starts reads until `PARALLEL_READS` (with the permit) or one is in flight.
    fn fill(&mut self) {
        let depth = if self.parallel.is_some() {
            PARALLEL_READS
        } else {
            1
        };
        while self.ahead.len() < depth {
            if self.parallel.is_some() && self.issued_to < self.known_last {
                let until = self
                    .known_last
                    .min(self.issued_to.saturating_add(u64::from(self.span)));
                // Only the first read in flight knows the line open where it starts.
                let open_len = if self.ahead.is_empty() {
                    self.open_len
                } else {
                    None
                };
                let query = self.query(self.issued_to, Some(until), open_len);
                self.issued_to = until;
                let read = self.start(query);
                self.ahead.push_back(read);
            } else {
                if self.ahead.is_empty() {
                    let query = self.query(self.after, None, self.open_len);
                    let read = self.start(query);
                    self.ahead.push_back(read);
                }
                break;
            }
        }
    }

    /// The next page to send: the first read in flight, read again if it started from
    /// somewhere else than where the text sent so far ends.
    async fn next_page(&mut self) -> storage::Result<(TextQuery, TextPage)> {
        loop {
            self.fill();
            let Some(Ahead { query, read }) = self.ahead.pop_front() else {
                return Err(storage::Error::new(ErrorKind::Internal, "no page read"));
            };
            let page = match read.await {
                Ok(page) => page?,
                Err(e) => {
                    return Err(storage::Error::with_source(
                        ErrorKind::Internal,
                        "reading the log",
                        e,
                    ))
                }
            };
            if query.lines.after_seq == self.after && query.open_len == self.open_len {
                return Ok((query, page));
            }
            let again = self.query(self.after, query.until_seq, self.open_len);
            let read = self.start(again);
            self.ahead.push_front(read);
        }
    }

    /// The next chunk of text, or `None` at the end.
    async fn next(&mut self) -> Option<storage::Result<Bytes>> {
        if self.done {
            return None;
        }
        let (query, mut page) = match self.next_page().await {
            Ok(read) => read,
            Err(e) => return self.fail(e),
        };
        let cut = page.is_full(&query);
        let more = match query.until_seq {
            // The sequential read after the last range decides where the log ends.
            Some(_) => true,
            None => cut || page.records >= self.records_left(),
        };
        self.budget.count_many(page.lines);
        if let Some(limit) = self.budget.reached().filter(|_| more) {
            // Stop after the last whole line, if lines are left. A line already begun on
            // an earlier page (longer than a page) is ended where it stands instead.
            let begun = page.complete_len == 0 && self.open_len.is_some();
            let after = if begun {
                page.text.push(b'\n');
                page.last_seq.unwrap_or(self.last_line_seq)
            } else {
                page.text.truncate(page.complete_len);
                page.last_line_seq.unwrap_or(self.last_line_seq)
            };
            self.done = true;
            self.ahead.clear();
            if self.any_after(after).await {
                page.text.extend_from_slice(&limit.trailer(after, false));
            }
            return Some(Ok(Bytes::from(page.text)));
        }
        if let Some(seq) = page.last_line_seq {
            self.last_line_seq = seq;
        }
        self.open_len = page.open_len;
        match (query.until_seq, page.last_seq) {
            // A range cut short goes on from where it stopped, before the reads after it.
            (Some(until), Some(last)) if cut && last < until => {
                self.after = last;
                let rest = self.query(last, Some(until), self.open_len);
                let read = self.start(rest);
                self.ahead.push_front(read);
            }
            (Some(until), _) => self.after = until,
            (None, Some(last)) => self.after = last,
            (None, None) => {}
        }
        if more {
            // Ranges started from now on are sized by what this page held.
            self.size_pages(&page);
            if query.until_seq.is_none() {
                self.start_parallel();
            }
        }
        if !more {
            self.done = true;
            // A line whose rest is not stored ends with what is (as `LineReader` does).
            if page.open_len.is_some() {
                page.text.push(b'\n');
            }
        } else {
            self.fill();
        }
        Some(Ok(Bytes::from(page.text)))
    }

    /// Sizes the next pages by this one's bytes per record: about `PAGE_BYTES` of text.
    fn size_pages(&mut self, page: &TextPage) {
        if page.records == 0 {
            return;
        }
        let per_record = page.text.len() / page.records.max(1) as usize + 1;
        let records = (PAGE_BYTES / per_record).clamp(1, MAX_PAGE_RECORDS as usize);
        self.span = u32::try_from(records).unwrap_or(MAX_PAGE_RECORDS);
    }

    /// Reads ranges in parallel from here if the rest of the log (as stored when the
    /// download began) fits the line budget and a permit is free.
    fn start_parallel(&mut self) {
        let rest = self.known_last.saturating_sub(self.after);
        if self.parallel.is_some() || rest == 0 || rest > self.budget.lines_left() as u64 {
            return;
        }
        if let Ok(permit) = PARALLEL_DOWNLOADS.try_acquire() {
            self.parallel = Some(permit);
            self.issued_to = self.after;
        }
    }

    /// Records a page may read within the line budget (a record ends a line at most).
    fn records_left(&self) -> u32 {
        u32::try_from(self.budget.lines_left()).unwrap_or(u32::MAX)
    }

    /// Whether a record is stored after `seq` (so a download stopped there has more).
    async fn any_after(&self, seq: u64) -> bool {
        let mut query = self.base;
        query.lines.after_seq = seq;
        query.lines.limit = 1;
        // One record is enough to know: no page-sized buffer for it.
        query.max_bytes = 1;
        match self.storage.read_text(&query).await {
            Ok(page) => page.records > 0,
            // Say there is more: the client continues and sees.
            Err(_) => true,
        }
    }

    fn fail(&mut self, e: storage::Error) -> Option<storage::Result<Bytes>> {
        tracing::error!(error = %e, "streaming a log download failed");
        self.done = true;
        self.ahead.clear();
        Some(Err(e))
    }
}

fn text_pages(
    storage: Arc<dyn Storage>,
    req: DownloadRequest,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    let pages = Pages {
        storage,
        base: TextQuery {
            lines: LineQuery {
                job_id: req.job_id,
                after_seq: req.after,
                limit: FIRST_PAGE_RECORDS,
                stream: req.stream,
            },
            max_bytes: PAGE_BYTES,
            max_joined: MAX_JOINED_BYTES,
            open_len: None,
            until_seq: None,
        },
        after: req.after,
        open_len: None,
        ahead: VecDeque::new(),
        issued_to: req.after,
        known_last: req.last_seq,
        span: FIRST_PAGE_RECORDS,
        parallel: None,
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
