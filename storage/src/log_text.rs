//! A job's stored records read straight into raw text, for downloads: each backend hands
//! the rows of one page to a [`TextAssembler`] as borrowed bytes, so a page costs one
//! buffer instead of a record (and an allocation) per line.
//!
//! The text is what joining the records into whole lines and ending each with `\n` gives:
//! a continuation record (`cont`) is followed by the next record with no newline, until a
//! record that ends its line. A joined line that reaches `max_joined` bytes ends there and
//! the rest starts a new line (a line that never ends, like a progress bar, stays bounded).
//! A line still open at a page's end stays open in [`TextPage::open_len`]; the caller
//! passes it back for the next page, and ends the line itself when nothing more is stored.

use crate::model::LineQuery;

/// Which records to read as text: `lines.limit` records at most, and no more once
/// `max_bytes` of text are assembled (the page then ends early; the next page starts after
/// its last record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextQuery {
    pub lines: LineQuery,
    /// Text bytes after which the page ends (a page may exceed it by one record).
    pub max_bytes: usize,
    /// Bytes after which a joined line ends (see the module docs).
    pub max_joined: usize,
    /// The length of the line the previous page left open, if it did.
    pub open_len: Option<usize>,
    /// Read no record past this seq (a page of a seq range; `None`: up to `lines.limit`).
    pub until_seq: Option<u64>,
}

/// One page of text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextPage {
    pub text: Vec<u8>,
    /// Records read.
    pub records: u32,
    /// The seq of the last record read (where the next page starts).
    pub last_seq: Option<u64>,
    /// The length of the line left open at the end of the page (its last record was a
    /// continuation), if any: pass it on in [`TextQuery::open_len`].
    pub open_len: Option<usize>,
    /// Lines this page ends (the `\n`s in `text`).
    pub lines: usize,
    /// The bytes of `text` up to the end of its last whole line, and the seq of the record
    /// that ended it: where a reader that stops here cuts the text and continues from.
    pub complete_len: usize,
    pub last_line_seq: Option<u64>,
}

impl TextPage {
    /// Whether this page read every record the query allowed (so more may follow).
    pub fn is_full(&self, query: &TextQuery) -> bool {
        self.records >= query.lines.limit || self.text.len() >= query.max_bytes
    }
}

/// Builds a [`TextPage`] from rows handed over one by one.
#[derive(Debug)]
pub(crate) struct TextAssembler {
    page: TextPage,
    max_bytes: usize,
    max_joined: usize,
}

impl TextAssembler {
    pub(crate) fn new(query: &TextQuery) -> TextAssembler {
        let cap = query.max_bytes.min(4 << 20);
        TextAssembler {
            page: TextPage {
                text: Vec::with_capacity(cap),
                open_len: query.open_len,
                ..TextPage::default()
            },
            max_bytes: query.max_bytes,
            max_joined: query.max_joined,
        }
    }

    /// Whether the page is full: stop reading rows.
    pub(crate) fn is_full(&self) -> bool {
        self.page.text.len() >= self.max_bytes
    }

    /// Adds one record.
    pub(crate) fn push(&mut self, seq: u64, cont: bool, line: &[u8]) {
        self.page.text.extend_from_slice(line);
        let joined = self.page.open_len.unwrap_or(0) + line.len();
        if cont && joined < self.max_joined {
            self.page.open_len = Some(joined);
        } else {
            self.page.text.push(b'\n');
            self.page.open_len = None;
            self.page.lines += 1;
            self.page.complete_len = self.page.text.len();
            self.page.last_line_seq = Some(seq);
        }
        self.page.records += 1;
        self.page.last_seq = Some(seq);
    }

    pub(crate) fn finish(self) -> TextPage {
        self.page
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(open_len: Option<usize>) -> TextQuery {
        TextQuery {
            lines: LineQuery {
                job_id: 1,
                after_seq: 0,
                limit: 10,
                stream: None,
            },
            max_bytes: 1 << 20,
            max_joined: 8,
            open_len,
            until_seq: None,
        }
    }

    #[test]
    fn joins_continuations_and_ends_lines() {
        let mut a = TextAssembler::new(&query(None));
        a.push(1, false, b"one");
        a.push(2, true, b"tw");
        a.push(3, false, b"o");
        a.push(4, true, b"open");
        let page = a.finish();
        assert_eq!(page.text, b"one\ntwo\nopen");
        assert_eq!(page.open_len, Some(4));
        assert_eq!(page.last_seq, Some(4));
        assert_eq!(page.records, 4);
        assert_eq!(
            (page.lines, page.complete_len, page.last_line_seq),
            (2, 8, Some(3))
        );
    }

    #[test]
    fn an_open_line_continues_on_the_next_page_and_ends_at_max_joined() {
        let mut a = TextAssembler::new(&query(Some(4)));
        a.push(5, true, b"more");
        a.push(6, true, b"rest");
        a.push(7, false, b"!");
        assert_eq!(a.finish().text, b"more\nrest!\n");
    }
}
