//! The ingest request body: a [`protocol::Batch`] as JSON, compressed as configured. The
//! spool writer encodes batches once (the spooled frame is the exact body sent); the shipper
//! decodes a body again only to split a batch logarithmd refused (see
//! [`crate::pipeline::shipper`]). Both sides use this module and nothing of each other.

use std::io::{Read, Write};

use bytes::Bytes;
use protocol::Batch;

use crate::config::Compression;

/// Serializes and compresses a batch (CPU-bound: call it off the async threads).
pub fn encode(batch: &Batch, compression: Compression) -> Result<Bytes, std::io::Error> {
    let json = serde_json::to_vec(batch)?;
    let body = match compression {
        Compression::None => json,
        Compression::Zstd => zstd::bulk::compress(&json, 3)?,
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(json.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(&json)?;
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
            let body = encode(&batch, c).unwrap();
            assert_eq!(decode(&body, c, 1 << 20).unwrap(), batch, "{c:?}");
            let err = decode(&body, c, 10).unwrap_err();
            assert!(err.to_string().contains("more than 10 bytes"), "{err}");
        }
    }
}
