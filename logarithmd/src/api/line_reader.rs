//! Reading a job's stored log as whole lines: [`LineReader`] pages through storage and
//! joins continuation records, for the JSON pages, the raw download and Loki queries.

use std::collections::VecDeque;
use std::sync::Arc;

use protocol::Stream;
use storage::{ErrorKind, JobId, LineQuery, Storage, StoredLine};
use tokio_util::task::AbortOnDropHandle;

use crate::live::{LogicalLine, MAX_JOINED_BYTES};

/// Records read per storage round trip.
const STORAGE_PAGE: u32 = 1000;

type PageRead = AbortOnDropHandle<storage::Result<Vec<StoredLine>>>;

/// Reads a job's records page by page and joins continuation records into lines.
pub struct LineReader {
    storage: Arc<dyn Storage>,
    job_id: JobId,
    stream: Option<Stream>,
    after: u64,
    buf: VecDeque<StoredLine>,
    exhausted: bool,
    /// Read the next page while this one is consumed (see [`LineReader::read_ahead`]).
    read_ahead: bool,
    /// The next page's read, when reading ahead (aborted if the reader is dropped).
    ahead: Option<PageRead>,
}

impl LineReader {
    pub fn new(
        storage: Arc<dyn Storage>,
        job_id: JobId,
        after: u64,
        stream: Option<Stream>,
    ) -> LineReader {
        LineReader {
            storage,
            job_id,
            stream,
            after,
            buf: VecDeque::new(),
            exhausted: false,
            read_ahead: false,
            ahead: None,
        }
    }

    /// Reads one page ahead: the next storage read runs while the current page is sent
    /// (for readers that go to the end, like the raw download; at most one page more is
    /// held).
    pub fn read_ahead(mut self) -> LineReader {
        self.read_ahead = true;
        self
    }

    fn query(&self) -> LineQuery {
        LineQuery {
            job_id: self.job_id,
            after_seq: self.after,
            limit: STORAGE_PAGE,
            stream: self.stream,
        }
    }

    async fn next_record(&mut self) -> storage::Result<Option<StoredLine>> {
        if self.buf.is_empty() && !self.exhausted {
            let page = match self.ahead.take() {
                Some(read) => read.await.map_err(|e| {
                    storage::Error::with_source(ErrorKind::Internal, "reading log lines", e)
                })??,
                None => self.storage.read_lines(&self.query()).await?,
            };
            if page.len() < STORAGE_PAGE as usize {
                self.exhausted = true;
            }
            if let Some(last) = page.last() {
                self.after = last.seq;
            }
            self.buf.extend(page);
            if self.read_ahead && !self.exhausted {
                let storage = self.storage.clone();
                let query = self.query();
                self.ahead = Some(AbortOnDropHandle::new(tokio::spawn(async move {
                    storage.read_lines(&query).await
                })));
            }
        }
        Ok(self.buf.pop_front())
    }

    /// The next whole line, or `None` at the end of what is stored.
    pub async fn next_line(&mut self) -> storage::Result<Option<LogicalLine>> {
        let Some(first) = self.next_record().await? else {
            return Ok(None);
        };
        let mut line = LogicalLine {
            seq: first.seq,
            last_seq: first.seq,
            ts: first.ts,
            stream: first.stream,
            line: first.line,
        };
        let mut cont = first.cont;
        // A line that never ends (a progress bar without newline) would otherwise be
        // joined without bound: past MAX_JOINED_BYTES the rest starts a new line.
        while cont && line.line.len() < MAX_JOINED_BYTES {
            // A line whose rest is not stored yet ends here; it is complete once it is.
            let Some(next) = self.next_record().await? else {
                break;
            };
            line.line.extend_from_slice(&next.line);
            line.last_seq = next.seq;
            cont = next.cont;
        }
        Ok(Some(line))
    }
}
