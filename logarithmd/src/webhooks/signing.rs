//! Signatures per the Standard Webhooks scheme (<https://www.standardwebhooks.com>):
//! `webhook-signature: v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
//!
//! The key is the secret's UTF-8 bytes, except that a secret of the form `whsec_<base64>`
//! is decoded first, as the Standard Webhooks libraries do, so receivers can use them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The delivery id: the same on every attempt, so receivers can deduplicate.
pub const HEADER_ID: &str = "webhook-id";
/// Unix seconds when this attempt was signed (receivers reject old ones: replay defence).
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// `v1,<base64 signature>`.
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// The event type (`job.finished`, …), so receivers can route before parsing the body.
pub const HEADER_EVENT: &str = "logarithm-event";
/// The attempt number (1 for the first).
pub const HEADER_ATTEMPT: &str = "logarithm-attempt";

type HmacSha256 = Hmac<Sha256>;

/// The HMAC key of a secret.
pub fn key(secret: &str) -> Vec<u8> {
    if let Some(b64) = secret.strip_prefix("whsec_") {
        if let Ok(k) = STANDARD.decode(b64) {
            return k;
        }
    }
    secret.as_bytes().to_vec()
}

fn mac(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(&key(secret)) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` value of a message.
pub fn sign(secret: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let sig = mac(secret, msg_id, timestamp, body).finalize().into_bytes();
    format!("v1,{}", STANDARD.encode(sig))
}

/// Whether a `webhook-signature` header (space-separated `v1,<sig>` entries) holds a valid
/// signature of the message, compared in constant time.
pub fn verify(secret: &str, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    header.split(' ').any(|entry| {
        let Some(sig) = entry.strip_prefix("v1,") else {
            return false;
        };
        let Ok(sig) = STANDARD.decode(sig) else {
            return false;
        };
        mac(secret, msg_id, timestamp, body)
            .verify_slice(&sig)
            .is_ok()
    })
}

/// Whether a GitHub `X-Hub-Signature-256` header (`sha256=<hex HMAC-SHA256(secret,
/// body)>`) signs `body`, compared in constant time. Used by webhook triggers.
pub fn verify_hub_signature(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(sig) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(sig) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks specification and its reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let ts = 1614265330;
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, id, ts, body);
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(verify(secret, id, ts, body, &format!("v1,bm90IGl0 {sig}")));
    }

    #[test]
    fn github_reference_vector() {
        // GitHub's documented example ("Validating webhook deliveries").
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_hub_signature(
            "It's a Secret to Everybody",
            b"Hello, World!",
            header
        ));
        assert!(!verify_hub_signature(
            "It's a Secret to Everybody",
            b"Hello, World?",
            header
        ));
        assert!(!verify_hub_signature("other", b"Hello, World!", header));
        assert!(!verify_hub_signature(
            "It's a Secret to Everybody",
            b"Hello, World!",
            "sha1=00"
        ));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let sig = sign("s3cret", "42", 1700000000, b"{}");
        assert!(verify("s3cret", "42", 1700000000, b"{}", &sig));
        assert!(!verify("s3cret!", "42", 1700000000, b"{}", &sig));
        assert!(!verify("s3cret", "43", 1700000000, b"{}", &sig));
        assert!(!verify("s3cret", "42", 1700000001, b"{}", &sig));
        assert!(!verify("s3cret", "42", 1700000000, b"{ }", &sig));
        assert!(!verify("s3cret", "42", 1700000000, b"{}", "v2,abc"));
        assert!(!verify("s3cret", "42", 1700000000, b"{}", "v1,!!"));
    }
}
