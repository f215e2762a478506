//! Shared by the examples (each uses part of it).
#![allow(dead_code)]

pub mod dataset;

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};

/// A `WorkOS-Signature` header for `body`, timestamped now.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t}, v1={}", hex::encode(mac.finalize().into_bytes()))
}
