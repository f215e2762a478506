//! The `WorkOS-Signature` check: `t=<unix ms>, v1=<hex HMAC-SHA256 of
//! "<t>.<raw body>">`, keyed with the endpoint secret, verified over the raw
//! bytes in constant time, with a two-sided tolerance on `t`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused (all are a 401; the reason is logged at debug).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no WorkOS-Signature header")]
    Missing,
    #[error("the WorkOS-Signature header is malformed")]
    Malformed,
    #[error("the signature timestamp is outside the tolerance")]
    Stale,
    #[error("the signature does not match")]
    Mismatch,
}

/// Verifies webhook signatures for one endpoint secret.
#[derive(Clone)]
pub struct WebhookVerifier {
    secret: Vec<u8>,
    tolerance: Duration,
}

impl std::fmt::Debug for WebhookVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerifier")
            .field("tolerance", &self.tolerance)
            .finish_non_exhaustive()
    }
}

impl WebhookVerifier {
    pub fn new(secret: impl Into<Vec<u8>>, tolerance: Duration) -> Self {
        Self {
            secret: secret.into(),
            tolerance,
        }
    }

    /// Checks everything about `header` that does not need the body: that
    /// it is present, well formed, and within the tolerance at `now_ms`.
    /// Run before reading a body, so a request that cannot pass costs
    /// nothing to refuse.
    ///
    /// # Errors
    /// [`SignatureError::Missing`], [`SignatureError::Malformed`] or
    /// [`SignatureError::Stale`].
    pub fn precheck(&self, header: Option<&[u8]>, now_ms: i64) -> Result<(), SignatureError> {
        self.parse(header, now_ms).map(|_| ())
    }

    /// Checks `header` against `body` at time `now_ms`.
    ///
    /// # Errors
    /// A [`SignatureError`] saying why the signature is refused.
    pub fn verify(
        &self,
        header: Option<&[u8]>,
        body: &[u8],
        now_ms: i64,
    ) -> Result<(), SignatureError> {
        let (t, signatures) = self.parse(header, now_ms)?;
        for candidate in signatures {
            let Ok(expected) = hex::decode(candidate) else {
                continue;
            };
            let mut mac =
                HmacSha256::new_from_slice(&self.secret).map_err(|_| SignatureError::Mismatch)?;
            mac.update(t.as_bytes());
            mac.update(b".");
            mac.update(body);
            // verify_slice compares in constant time.
            if mac.verify_slice(&expected).is_ok() {
                return Ok(());
            }
        }
        Err(SignatureError::Mismatch)
    }

    /// The timestamp text and the `v1` signatures of a header that is well
    /// formed and within the tolerance.
    fn parse<'h>(
        &self,
        header: Option<&'h [u8]>,
        now_ms: i64,
    ) -> Result<(&'h str, Vec<&'h str>), SignatureError> {
        let header = header.ok_or(SignatureError::Missing)?;
        let header = std::str::from_utf8(header).map_err(|_| SignatureError::Malformed)?;
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for part in header.split(',') {
            let (key, value) = part
                .trim()
                .split_once('=')
                .ok_or(SignatureError::Malformed)?;
            match key.trim() {
                "t" => timestamp = Some(value.trim()),
                "v1" => signatures.push(value.trim()),
                _ => {}
            }
        }
        let t = timestamp.ok_or(SignatureError::Malformed)?;
        if t.is_empty() || t.len() > 16 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SignatureError::Malformed);
        }
        let issued: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
        if signatures.is_empty() {
            return Err(SignatureError::Malformed);
        }
        let tolerance = i64::try_from(self.tolerance.as_millis()).unwrap_or(i64::MAX);
        if now_ms.abs_diff(issued) > tolerance.unsigned_abs() {
            return Err(SignatureError::Stale);
        }
        Ok((t, signatures))
    }
}

/// Computes a `WorkOS-Signature` header value (for `rollcall` tooling and tests).
pub fn sign(secret: &[u8], body: &[u8], timestamp_ms: i64) -> String {
    let t = timestamp_ms.to_string();
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t}, v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    fn verifier() -> WebhookVerifier {
        WebhookVerifier::new("sekrit", Duration::from_secs(180))
    }

    #[test]
    fn accepts_its_own_signature_with_spacing_variants() {
        let header = sign(b"sekrit", b"{}", NOW);
        assert_eq!(
            verifier().verify(Some(header.as_bytes()), b"{}", NOW),
            Ok(())
        );
        let spaced = format!(" {} ", header.replace(", ", " ,  ").replace("v1=", "v1= "));
        assert_eq!(
            verifier().verify(Some(spaced.as_bytes()), b"{}", NOW + 1000),
            Ok(())
        );
    }

    #[test]
    fn refuses_every_bad_form() {
        let v = verifier();
        let good = sign(b"sekrit", b"{}", NOW);
        assert_eq!(v.verify(None, b"{}", NOW), Err(SignatureError::Missing));
        assert_eq!(
            v.verify(Some(b"garbage"), b"{}", NOW),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            v.verify(Some(b"t=abc, v1=00"), b"{}", NOW),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            v.verify(Some(good.as_bytes()), b"{ }", NOW),
            Err(SignatureError::Mismatch)
        );
        let other = sign(b"other", b"{}", NOW);
        assert_eq!(
            v.verify(Some(other.as_bytes()), b"{}", NOW),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            v.verify(Some(good.as_bytes()), b"{}", NOW + 181_000),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            v.verify(Some(good.as_bytes()), b"{}", NOW - 181_000),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            v.verify(Some(&[0xff, 0xfe]), b"{}", NOW),
            Err(SignatureError::Malformed)
        );
    }
}
