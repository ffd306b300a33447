//! The ingest request body: a [`protocol::Batch`] as JSON, compressed as configured. The
//! spool writer encodes batches once (the spooled frame is the exact body sent); the shipper
//! decodes a body again only to split a batch logarithmd refused (see
//! [`crate::pipeline::shipper`]). Both sides use this module and nothing of each other.
//! [`json`] writes the JSON (records by hand, the same bytes as `serde_json`).

mod json;

use std::io::{Read, Write};
use std::sync::Mutex;

use bytes::Bytes;
use protocol::Batch;

use crate::config::Compression;

/// zstd's level for request bodies. Level 1 ("fast") costs about half the CPU of the
/// library's default 3 on log lines (docs/performance.md, 2026-12-02) and logarithmd
/// decodes every level alike.
const ZSTD_LEVEL: i32 = 1;
/// JSON framing per record beyond its payload (`{"seq":..,"ts":..,"stream":"stdout",
/// "text":""}`), to size the JSON buffer once instead of growing it by copies.
const RECORD_JSON_OVERHEAD: usize = 96;
/// The encoder keeps its JSON buffer between batches up to this capacity (a batch is at
/// most `batch_max_bytes`, 4 MiB by default, plus framing).
const KEEP_JSON_CAPACITY: usize = 8 << 20;

/// What encoding reuses from batch to batch.
struct Encoder {
    /// The zstd context: making one per batch allocates and clears its tables each time.
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// The JSON of the batch being compressed.
    json: Vec<u8>,
}

/// One encoder for the process, not one per thread: batches are encoded on tokio's
/// blocking pool, whose threads come and go, and a context and buffer per thread held
/// megabytes each for the life of the thread (docs/performance.md). The spool writer
/// encodes one batch at a time, so the lock is all but never contended.
static ENCODER: Mutex<Encoder> = Mutex::new(Encoder {
    zstd: None,
    json: Vec::new(),
});

/// The JSON size of `batch`, roughly (an upper estimate for plain text lines).
fn json_estimate(batch: &Batch) -> usize {
    256 + batch
        .segments
        .iter()
        .map(|s| {
            1024 + s
                .records
                .iter()
                .map(|r| r.payload_len() + RECORD_JSON_OVERHEAD)
                .sum::<usize>()
        })
        .sum::<usize>()
}

fn zstd_compress(
    slot: &mut Option<zstd::bulk::Compressor<'static>>,
    json: &[u8],
) -> std::io::Result<Vec<u8>> {
    let c = match slot.as_mut() {
        Some(c) => c,
        None => slot.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
    };
    c.compress(json)
}

/// Serializes and compresses a batch (CPU-bound: call it off the async threads).
pub fn encode(batch: &Batch, compression: Compression) -> Result<Bytes, std::io::Error> {
    if compression == Compression::None {
        let mut json = Vec::with_capacity(json_estimate(batch));
        json::write_batch(batch, &mut json)?;
        return Ok(Bytes::from(json));
    }
    let mut encoder = ENCODER.lock().unwrap_or_else(|e| e.into_inner());
    let Encoder { zstd, json } = &mut *encoder;
    json.clear();
    json.reserve(json_estimate(batch));
    let body = compress(batch, compression, json, zstd);
    if json.capacity() > KEEP_JSON_CAPACITY {
        *json = Vec::new();
    }
    body
}

fn compress(
    batch: &Batch,
    compression: Compression,
    json: &mut Vec<u8>,
    zstd: &mut Option<zstd::bulk::Compressor<'static>>,
) -> Result<Bytes, std::io::Error> {
    json::write_batch(batch, json)?;
    let body = match compression {
        Compression::None => json.clone(),
        Compression::Zstd => zstd_compress(zstd, json)?,
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(json.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(json)?;
            enc.finish()?
        }
    };
    Ok(Bytes::from(body))
}

/// Decompresses and parses a body made by [`encode`] (CPU-bound). `max_json` bounds the
/// decompressed size, so a damaged frame cannot make it allocate without limit.
pub fn decode(body: &[u8], compression: Compression, max_json: u64) -> std::io::Result<Batch> {
    let mut json = Vec::new();
    match compression {
        Compression::None => json.extend_from_slice(body),
        Compression::Zstd => {
            zstd::stream::read::Decoder::new(body)?
                .take(max_json + 1)
                .read_to_end(&mut json)?;
        }
        Compression::Gzip => {
            flate2::read::GzDecoder::new(body)
                .take(max_json + 1)
                .read_to_end(&mut json)?;
        }
    }
    if json.len() as u64 > max_json {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("batch body decompresses to more than {max_json} bytes"),
        ));
    }
    Ok(serde_json::from_slice(&json)?)
}

/// The HTTP `Content-Encoding` of a compression, if any.
pub fn content_encoding(compression: Compression) -> Option<&'static str> {
    match compression {
        Compression::Zstd => Some("zstd"),
        Compression::Gzip => Some("gzip"),
        Compression::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Agent, ContainerSegment, Record, Stream};

    fn batch() -> Batch {
        Batch {
            version: 1,
            agent: Agent {
                id: "a".into(),
                node: "n".into(),
            },
            segments: vec![ContainerSegment {
                container_id: "c".into(),
                meta: None,
                records: vec![Record::new(1, 2, Stream::Stdout, b"x\"y".to_vec(), false)],
                exit: None,
                logs_unavailable: None,
            }],
        }
    }

    #[test]
    fn encodings_round_trip() {
        let batch = batch();
        let json = serde_json::to_vec(&batch).unwrap();
        assert_eq!(&encode(&batch, Compression::None).unwrap()[..], &json[..]);
        let z = encode(&batch, Compression::Zstd).unwrap();
        assert_eq!(zstd::decode_all(&z[..]).unwrap(), json);
        let g = encode(&batch, Compression::Gzip).unwrap();
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&g[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, json);
        for c in [Compression::None, Compression::Zstd, Compression::Gzip] {
            // Twice: the second call reuses the zstd context and JSON buffer.
            assert_eq!(encode(&batch, c).unwrap(), encode(&batch, c).unwrap());
            let body = encode(&batch, c).unwrap();
            assert_eq!(decode(&body, c, 1 << 20).unwrap(), batch, "{c:?}");
            let err = decode(&body, c, 10).unwrap_err();
            assert!(err.to_string().contains("more than 10 bytes"), "{err}");
        }
    }
}
