//! The spool's on-disk format: segment files of checksummed frames, and the ack file.
//!
//! A segment is `{id:020}.seg` (ids increase and are never reused): an 8-byte magic
//! [`MAGIC`], then frames back to back. A frame is
//!
//! ```text
//! u32 LE  payload length
//! u32 LE  CRC-32 (IEEE) of the payload
//! payload: u8 format version (3) | u8 compression | u32 LE records | i64 LE newest ts
//!          | u32 LE effects length | effects | u32 LE keys length | keys | body
//! ```
//!
//! where `effects` is the JSON array of the batch's checkpoint effects
//! (`[[container_id, effect], ...]`, see [`crate::checkpoint::Effect`]), applied once
//! logarithmd acknowledges the frame, `keys` the JSON array of the sources (container ids)
//! the batch holds data of (the shipper keeps each source's batches in order while several
//! are in flight), and `body` is the exact HTTP request body (a
//! [`protocol::Batch`], compressed as the compression byte says), so a frame is sent again
//! byte for byte, even after a restart with another `compression` setting. An empty body
//! means there is nothing to send, only effects to apply (a batch holding only the removal
//! of a container). Version 1 frames (no effects field) are still read, as frames without
//! effects, and version 2 frames (no keys) as frames whose sources are unknown.
//!
//! The ack file (`ack`) holds the position of the next frame to deliver: segment id, byte
//! offset and a CRC-32 of both (20 bytes). Everything in this module is synchronous I/O.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::checkpoint::Effect;
use crate::config::Compression;

/// First bytes of every segment file.
pub const MAGIC: &[u8; 8] = b"LGSPOOL1";
/// Offset of the first frame in a segment.
pub const HEADER_LEN: u64 = MAGIC.len() as u64;
/// Length and checksum in front of every payload.
pub const FRAME_HEADER_LEN: u64 = 8;
/// Version byte, compression byte, records, newest timestamp.
const META_LEN: usize = 1 + 1 + 4 + 8;
/// Frames without effects (still read).
const FRAME_VERSION_1: u8 = 1;
/// Frames with the effects' length and JSON after the meta header (still read).
const FRAME_VERSION_2: u8 = 2;
/// Frames with effects, then the keys' length and JSON.
const FRAME_VERSION: u8 = 3;
/// The length field of the effects and of the keys (versions 2 and 3).
const EFFECTS_LEN_LEN: usize = 4;
/// Longest payload accepted when reading; a larger length field is corruption.
pub const MAX_PAYLOAD: u64 = 1 << 30;
pub const ACK_FILE: &str = "ack";
const ACK_LEN: usize = 20;
pub const SEGMENT_SUFFIX: &str = ".seg";
/// Appended to the name of a segment that cannot be read at all; kept for inspection.
pub const CORRUPT_SUFFIX: &str = ".corrupt";

/// A position in the spool: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
}

/// What a frame says about the batch it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameMeta {
    pub compression: Compression,
    /// Log records in the batch.
    pub records: u32,
    /// Newest record timestamp (ns), 0 if none.
    pub newest_ts: i64,
}

/// A batch's checkpoint effects, in order.
pub type Effects = Vec<(Arc<str>, Effect)>;

/// One batch read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub meta: FrameMeta,
    /// What acknowledging the frame does to the checkpoint, in order.
    pub effects: Effects,
    /// The sources (container ids) the body holds data of; `None` for frames written by
    /// older agents (their order against other frames is then unknown).
    pub keys: Option<Vec<Arc<str>>>,
    /// The request body; empty: nothing to send, only effects to apply.
    pub body: Bytes,
    /// Spooled before this start (set by the reader).
    pub replayed: bool,
}

/// The result of reading at a frame boundary.
#[derive(Debug)]
pub enum ReadOutcome {
    /// A good frame, and the offset right after it.
    Frame(Frame, u64),
    /// Nothing more before `end`.
    End,
    /// The bytes from here on are not a complete, intact frame.
    Bad(Damage),
}

/// Why a frame cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The frame extends past the end of the data (a write cut short).
    Truncated,
    /// The length field, checksum or metadata is wrong.
    Corrupt(String),
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Damage::Truncated => f.write_str("truncated frame"),
            Damage::Corrupt(why) => f.write_str(why),
        }
    }
}

pub fn segment_name(id: u64) -> String {
    format!("{id:020}{SEGMENT_SUFFIX}")
}

/// The id of a segment file name, `None` for other files.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn compression_code(c: Compression) -> u8 {
    match c {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Zstd => 2,
    }
}

fn compression_of(code: u8) -> Option<Compression> {
    match code {
        0 => Some(Compression::None),
        1 => Some(Compression::Gzip),
        2 => Some(Compression::Zstd),
        _ => None,
    }
}

/// A whole frame (header and payload), ready to append.
pub fn encode_frame(
    meta: &FrameMeta,
    effects: &[(Arc<str>, Effect)],
    keys: &[Arc<str>],
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    let effects: Vec<(&str, &Effect)> = effects.iter().map(|(id, e)| (&**id, e)).collect();
    let effects = serde_json::to_vec(&effects)?;
    let effects_len = u32::try_from(effects.len())
        .map_err(|_| std::io::Error::other("checkpoint effects too large for a frame"))?;
    let keys: Vec<&str> = keys.iter().map(|k| &**k).collect();
    let keys = serde_json::to_vec(&keys)?;
    let keys_len = u32::try_from(keys.len())
        .map_err(|_| std::io::Error::other("frame keys too large for a frame"))?;
    Ok(encode_payload(
        FRAME_VERSION,
        meta,
        &[
            &effects_len.to_le_bytes(),
            &effects,
            &keys_len.to_le_bytes(),
            &keys,
            body,
        ],
    ))
}

/// A version 2 frame (no keys), as older agents wrote them.
#[cfg(test)]
pub fn encode_frame_v2(meta: &FrameMeta, effects: &[(Arc<str>, Effect)], body: &[u8]) -> Vec<u8> {
    let effects: Vec<(&str, &Effect)> = effects.iter().map(|(id, e)| (&**id, e)).collect();
    let effects = serde_json::to_vec(&effects).unwrap_or_default();
    let effects_len = effects.len() as u32;
    encode_payload(
        FRAME_VERSION_2,
        meta,
        &[&effects_len.to_le_bytes(), &effects, body],
    )
}

fn encode_payload(version: u8, meta: &FrameMeta, parts: &[&[u8]]) -> Vec<u8> {
    let payload_len = META_LEN + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN as usize + payload_len);
    out.extend_from_slice(&(payload_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // checksum, below
    out.push(version);
    out.push(compression_code(meta.compression));
    out.extend_from_slice(&meta.records.to_le_bytes());
    out.extend_from_slice(&meta.newest_ts.to_le_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    let crc = crc32fast::hash(&out[FRAME_HEADER_LEN as usize..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A version 1 frame (no effects), as older agents wrote them.
#[cfg(test)]
pub fn encode_frame_v1(meta: &FrameMeta, body: &[u8]) -> Vec<u8> {
    encode_payload(FRAME_VERSION_1, meta, &[body])
}

/// The JSON field that starts at `at` with its u32 length, and the offset after it.
fn length_prefixed<'a, T: serde::Deserialize<'a>>(
    payload: &'a [u8],
    at: usize,
    what: &str,
) -> Result<(T, usize), String> {
    let Some(len) = payload.get(at..at + EFFECTS_LEN_LEN) else {
        return Err(format!("frame too short for its {what} length"));
    };
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    let start = at + EFFECTS_LEN_LEN;
    let Some(json) = payload.get(start..start.saturating_add(len)) else {
        return Err(format!("{what} length {len} beyond the frame"));
    };
    let v = serde_json::from_slice(json).map_err(|e| format!("unreadable {what}: {e}"))?;
    Ok((v, start + len))
}

/// The effects and the offset after them in a version 2 or 3 payload.
fn decode_effects(payload: &[u8]) -> Result<(Effects, usize), String> {
    let (effects, end): (Vec<(String, Effect)>, usize) =
        length_prefixed(payload, META_LEN, "effects")?;
    let effects = effects
        .into_iter()
        .map(|(id, e)| (Arc::from(id), e))
        .collect();
    Ok((effects, end))
}

/// The keys and the offset of the body in a version 3 payload, from `at` (after effects).
fn decode_keys(payload: &[u8], at: usize) -> Result<(Vec<Arc<str>>, usize), String> {
    let (keys, end): (Vec<String>, usize) = length_prefixed(payload, at, "keys")?;
    Ok((keys.into_iter().map(Arc::from).collect(), end))
}

/// Reads the frame at `offset`, using only bytes before `end`.
pub fn read_frame(file: &File, offset: u64, end: u64) -> std::io::Result<ReadOutcome> {
    if offset >= end {
        return Ok(ReadOutcome::End);
    }
    if end - offset < FRAME_HEADER_LEN {
        return Ok(ReadOutcome::Bad(Damage::Truncated));
    }
    let mut header = [0u8; FRAME_HEADER_LEN as usize];
    file.read_exact_at(&mut header, offset)?;
    let len = u64::from(u32::from_le_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len < META_LEN as u64 || len > MAX_PAYLOAD {
        return Ok(ReadOutcome::Bad(Damage::Corrupt(format!(
            "impossible frame length {len}"
        ))));
    }
    let next = offset + FRAME_HEADER_LEN + len;
    if next > end {
        return Ok(ReadOutcome::Bad(Damage::Truncated));
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, offset + FRAME_HEADER_LEN)?;
    if crc32fast::hash(&payload) != crc {
        return Ok(ReadOutcome::Bad(Damage::Corrupt(
            "checksum mismatch".into(),
        )));
    }
    let decoded = match payload[0] {
        FRAME_VERSION_1 => Ok((Vec::new(), None, META_LEN)),
        FRAME_VERSION_2 => decode_effects(&payload).map(|(e, at)| (e, None, at)),
        FRAME_VERSION => decode_effects(&payload)
            .and_then(|(e, at)| decode_keys(&payload, at).map(|(k, at)| (e, Some(k), at))),
        v => Err(format!("unknown frame version {v}")),
    };
    let (effects, keys, body_at) = match decoded {
        Ok(v) => v,
        Err(why) => return Ok(ReadOutcome::Bad(Damage::Corrupt(why))),
    };
    let Some(compression) = compression_of(payload[1]) else {
        return Ok(ReadOutcome::Bad(Damage::Corrupt(format!(
            "unknown compression {}",
            payload[1]
        ))));
    };
    let records = u32::from_le_bytes([payload[2], payload[3], payload[4], payload[5]]);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&payload[6..14]);
    let meta = FrameMeta {
        compression,
        records,
        newest_ts: i64::from_le_bytes(ts),
    };
    let body = Bytes::from(payload).slice(body_at..);
    Ok(ReadOutcome::Frame(
        Frame {
            meta,
            effects,
            keys,
            body,
            replayed: false,
        },
        next,
    ))
}

/// Whether `file` starts with [`MAGIC`].
pub fn has_magic(file: &File, len: u64) -> std::io::Result<bool> {
    if len < HEADER_LEN {
        return Ok(false);
    }
    let mut magic = [0u8; HEADER_LEN as usize];
    file.read_exact_at(&mut magic, 0)?;
    Ok(&magic == MAGIC)
}

/// How far the frames of a segment are intact, from [`HEADER_LEN`] to `len`.
#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    /// End of the last intact frame.
    pub valid_end: u64,
    /// What stopped the scan before `len`, if anything.
    pub damage: Option<Damage>,
}

/// Checks every frame of a segment (checksums included).
pub fn scan(file: &File, len: u64) -> std::io::Result<Scan> {
    let mut at = HEADER_LEN;
    loop {
        match read_frame(file, at, len)? {
            ReadOutcome::Frame(_, next) => at = next,
            ReadOutcome::End => {
                return Ok(Scan {
                    valid_end: at,
                    damage: None,
                })
            }
            ReadOutcome::Bad(d) => {
                return Ok(Scan {
                    valid_end: at,
                    damage: Some(d),
                })
            }
        }
    }
}

/// Whether the damage found by [`scan`] in the newest segment is a write cut short by a
/// crash (the last frame, up to the end of the file) rather than corruption in the middle.
pub fn is_torn_tail(file: &File, scan: &Scan, len: u64) -> std::io::Result<bool> {
    match &scan.damage {
        None => Ok(false),
        Some(Damage::Truncated) => Ok(true),
        // A complete-looking last frame whose bytes did not all reach the disk.
        Some(Damage::Corrupt(_)) => {
            let mut header = [0u8; FRAME_HEADER_LEN as usize];
            if len - scan.valid_end < FRAME_HEADER_LEN {
                return Ok(true);
            }
            file.read_exact_at(&mut header, scan.valid_end)?;
            let n = u64::from(u32::from_le_bytes([
                header[0], header[1], header[2], header[3],
            ]));
            Ok(scan.valid_end + FRAME_HEADER_LEN + n == len)
        }
    }
}

/// Writes the ack position through a temporary file and a rename. Not fsynced: losing it
/// (power loss) only means frames already delivered are sent again.
pub fn write_ack(dir: &Path, at: Cursor) -> std::io::Result<()> {
    let mut buf = [0u8; ACK_LEN];
    buf[..8].copy_from_slice(&at.segment.to_le_bytes());
    buf[8..16].copy_from_slice(&at.offset.to_le_bytes());
    let crc = crc32fast::hash(&buf[..16]);
    buf[16..].copy_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{ACK_FILE}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&buf)?;
    drop(f);
    std::fs::rename(&tmp, dir.join(ACK_FILE))
}

/// The ack position, `None` when there is no ack file; `Err` names what is wrong with it.
pub fn read_ack(dir: &Path) -> Result<Option<Cursor>, String> {
    let mut buf = Vec::new();
    match File::open(dir.join(ACK_FILE)) {
        Ok(mut f) => f.read_to_end(&mut buf).map_err(|e| e.to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if buf.len() != ACK_LEN {
        return Err(format!("{} bytes instead of {ACK_LEN}", buf.len()));
    }
    let crc = u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]);
    if crc32fast::hash(&buf[..16]) != crc {
        return Err("checksum mismatch".into());
    }
    let mut seg = [0u8; 8];
    seg.copy_from_slice(&buf[..8]);
    let mut off = [0u8; 8];
    off.copy_from_slice(&buf[8..16]);
    Ok(Some(Cursor {
        segment: u64::from_le_bytes(seg),
        offset: u64::from_le_bytes(off),
    }))
}

/// fsync of a directory, so entries created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
