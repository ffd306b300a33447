//! A Server-Sent Events reader over a streamed HTTP body: `event:`, `data:` and `id:`
//! fields, comments and heartbeats skipped, one [`Event`] per blank-line-terminated block
//! (the text/event-stream format, as an `EventSource` reads it). Lines are bounded.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `message` when the block named none.
    pub event: String,
    pub data: String,
    pub id: Option<String>,
}

/// Longest line accepted (a log line of 16 MiB, base64, in JSON, fits).
const MAX_LINE: usize = 32 << 20;

/// Accumulates body chunks and hands out complete events.
#[derive(Default)]
pub struct Parser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    id: Option<String>,
}

impl Parser {
    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, String> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).map_err(|_| "the event stream is not UTF-8")?;
            if let Some(ev) = self.line(&line) {
                out.push(ev);
            }
        }
        if self.buf.len() > MAX_LINE {
            return Err("an event stream line is longer than 32 MiB".into());
        }
        Ok(out)
    }

    fn line(&mut self, line: &str) -> Option<Event> {
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_none() {
                return None;
            }
            let ev = Event {
                event: self.event.take().unwrap_or_else(|| "message".into()),
                data: std::mem::take(&mut self.data).join("\n"),
                id: self.id.clone(),
            };
            return Some(ev);
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => self.data.push(value.to_owned()),
            "id" => self.id = Some(value.to_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_across_chunks() {
        let mut p = Parser::default();
        let mut all = Vec::new();
        let stream = ": live\nretry: 1000\n\nevent: line\nid: 41\ndata: {\"a\":1}\n\n: heartbeat\n\nevent: end\r\nid: 42\r\ndata: x\r\ndata: y\r\n\r\n";
        for chunk in stream.as_bytes().chunks(3) {
            all.extend(p.push(chunk).unwrap());
        }
        assert_eq!(
            all,
            vec![
                Event {
                    event: "line".into(),
                    data: "{\"a\":1}".into(),
                    id: Some("41".into())
                },
                Event {
                    event: "end".into(),
                    data: "x\ny".into(),
                    id: Some("42".into())
                },
            ]
        );
    }
}
