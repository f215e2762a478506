//! Content codings for list bodies: what a client accepts
//! (`Accept-Encoding`), which coding it gets, and the compressors.
//!
//! Levels were picked for throughput on the list bodies rollcall serves
//! (`benches/compression.rs`, per 100,000 users = 84 MB): zstd level 3
//! makes 10.2% of the plain size in ~120 ms, gzip level 3 11.3% in ~270 ms;
//! brotli gains a point at five times gzip's cost and every client that
//! takes `br` also takes gzip, so it is not offered.
//!
//! A compressed body must be the same bytes on every instance (ETags are
//! shared): the compressors are fed in fixed [`PIECE`]-sized writes, so the
//! output never depends on how the input happened to arrive.
//!
//! This module knows nothing of lists, caches or files.

use std::io::Write;

/// Bodies shorter than this are sent as they are: the coding's framing
/// would eat most of the gain.
pub const MIN_BYTES: usize = 1024;
/// The size of every write into a compressor (the last one may be shorter).
pub const PIECE: usize = 256 * 1024;

const ZSTD_LEVEL: i32 = 3;
const GZIP_LEVEL: u32 = 3;

/// A body's content coding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encoding {
    Identity,
    Gzip,
    Zstd,
}

impl Encoding {
    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    /// The strong validator of this coding of the body whose identity
    /// validator is `tag` (a quoted string): a 304 confirms only the coding
    /// the client holds.
    pub fn etag(self, tag: &str) -> String {
        match self {
            Self::Identity => tag.to_owned(),
            other => format!("{}-{}\"", tag.trim_end_matches('"'), other.token()),
        }
    }
}

/// What an `Accept-Encoding` header allows, as quality values (0..=1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// `None`: not named (acceptable, below any coding named).
    identity: Option<u16>,
    gzip: u16,
    zstd: u16,
}

impl Accepted {
    /// Nothing but the body as it is (no header).
    pub const IDENTITY: Self = Self {
        identity: None,
        gzip: 0,
        zstd: 0,
    };

    /// Parses an `Accept-Encoding` value (RFC 9110 §12.5.3): codings with
    /// optional `q`; `*` stands for every coding not named; `x-gzip` is
    /// gzip. Malformed members are skipped.
    pub fn parse(header: Option<&str>) -> Self {
        let Some(header) = header else {
            return Self::IDENTITY;
        };
        let (mut identity, mut gzip, mut zstd, mut star) = (None, None, None, None);
        for member in header.split(',').take(64) {
            let mut parts = member.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let mut q = Some(1000);
            for param in parts {
                if let Some((name, value)) = param.split_once('=')
                    && name.trim().eq_ignore_ascii_case("q")
                {
                    q = quality(value.trim());
                }
            }
            let Some(q) = q else { continue };
            match coding.as_str() {
                "identity" => identity = Some(q),
                "gzip" | "x-gzip" => gzip = Some(q),
                "zstd" => zstd = Some(q),
                "*" => star = Some(q),
                _ => {}
            }
        }
        Self {
            identity: identity.or(star),
            gzip: gzip.or(star).unwrap_or(0),
            zstd: zstd.or(star).unwrap_or(0),
        }
    }

    /// The coding to send: the most preferred of those accepted, zstd
    /// before gzip before identity on a tie; identity unless named only
    /// when no coding is accepted (`gzip;q=0.5` asks for gzip). Identity
    /// when nothing else is acceptable (even if refused: RFC 9110 lets a
    /// server send it).
    pub fn preferred(&self) -> Encoding {
        [
            (Encoding::Zstd, self.zstd),
            (Encoding::Gzip, self.gzip),
            (Encoding::Identity, self.identity.unwrap_or(0)),
        ]
        .into_iter()
        .filter(|(_, q)| *q > 0)
        .max_by_key(|(e, q)| (*q, std::cmp::Reverse(*e == Encoding::Identity), *e))
        .map_or(Encoding::Identity, |(e, _)| e)
    }

    /// Whether a body in `encoding` is one this client can use (what a
    /// stored copy it revalidates may be in).
    pub fn accepts(&self, encoding: Encoding) -> bool {
        match encoding {
            // A client always understands the plain body.
            Encoding::Identity => true,
            Encoding::Gzip => self.gzip > 0,
            Encoding::Zstd => self.zstd > 0,
        }
    }
}

/// A `q` value in thousandths: `0`, `1`, `0.5`, `1.000` (at most three
/// decimals); anything else is malformed.
fn quality(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A compressor writing into `W`.
pub enum Compressor<W: Write> {
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    /// A compressor for `encoding` (not identity).
    ///
    /// # Errors
    /// When the zstd context cannot be made, or `encoding` is identity.
    pub fn new(encoding: Encoding, out: W) -> std::io::Result<Self> {
        match encoding {
            Encoding::Gzip => Ok(Self::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::new(GZIP_LEVEL),
            ))),
            Encoding::Zstd => Ok(Self::Zstd(zstd::stream::write::Encoder::new(
                out, ZSTD_LEVEL,
            )?)),
            Encoding::Identity => Err(std::io::Error::other("identity is not a compression")),
        }
    }

    /// Compresses one piece of input (callers write [`PIECE`]s).
    ///
    /// # Errors
    /// The output's write errors.
    pub fn write_piece(&mut self, piece: &[u8]) -> std::io::Result<()> {
        match self {
            Self::Gzip(e) => e.write_all(piece),
            Self::Zstd(e) => e.write_all(piece),
        }
    }

    /// Writes the end of the stream; returns the output.
    ///
    /// # Errors
    /// The output's write errors.
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Self::Gzip(e) => e.finish(),
            Self::Zstd(e) => e.finish(),
        }
    }
}

/// `body` compressed with `encoding`, fed in [`PIECE`]s.
///
/// # Errors
/// When the compressor cannot be made.
pub fn compress(encoding: Encoding, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut c = Compressor::new(encoding, Vec::with_capacity(body.len() / 6 + 64))?;
    for piece in body.chunks(PIECE) {
        c.write_piece(piece)?;
    }
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_negotiated_by_quality() {
        let pick = |h: &str| Accepted::parse(Some(h)).preferred();
        assert_eq!(Accepted::parse(None).preferred(), Encoding::Identity);
        assert_eq!(pick("gzip"), Encoding::Gzip);
        assert_eq!(pick("gzip, deflate, br"), Encoding::Gzip);
        assert_eq!(pick("gzip, zstd"), Encoding::Zstd, "zstd first on a tie");
        assert_eq!(pick("zstd;q=0.5, gzip"), Encoding::Gzip);
        assert_eq!(pick("GZIP;Q=1.0"), Encoding::Gzip);
        assert_eq!(pick("x-gzip"), Encoding::Gzip);
        assert_eq!(pick("*"), Encoding::Zstd);
        assert_eq!(pick("*;q=0.1, identity"), Encoding::Identity);
        assert_eq!(pick("gzip;q=0"), Encoding::Identity);
        assert_eq!(pick("gzip;q=0, *;q=0"), Encoding::Identity);
        assert_eq!(pick("br, deflate"), Encoding::Identity);
        assert_eq!(
            pick("gzip;q=2"),
            Encoding::Identity,
            "q over 1 is malformed"
        );
        assert_eq!(pick("gzip;q=0.0001"), Encoding::Identity, "four decimals");
        assert_eq!(pick("gzip;q=abc, zstd;q=0.001"), Encoding::Zstd);
        assert_eq!(pick("gzip;q=0.8, zstd;q=0.9"), Encoding::Zstd);
        assert_eq!(pick("gzip;q=0.8, identity"), Encoding::Identity);
        assert_eq!(
            pick("gzip;q=abc, zstd;q=0.001, identity;q=0"),
            Encoding::Zstd
        );
        assert_eq!(pick(""), Encoding::Identity);
        let a = Accepted::parse(Some("gzip;q=0"));
        assert!(a.accepts(Encoding::Identity) && !a.accepts(Encoding::Gzip));
    }

    #[test]
    fn each_coding_has_its_own_validator() {
        let tag = "\"0123abcd\"";
        assert_eq!(Encoding::Identity.etag(tag), tag);
        assert_eq!(Encoding::Gzip.etag(tag), "\"0123abcd-gzip\"");
        assert_eq!(Encoding::Zstd.etag(tag), "\"0123abcd-zstd\"");
    }

    #[test]
    fn compressed_bodies_decode_to_the_input_and_do_not_depend_on_arrival() {
        use std::io::Read;
        let body: Vec<u8> = (0..700_000u32)
            .flat_map(|i| format!("{{\"n\":{i}}},").into_bytes())
            .collect();
        for enc in [Encoding::Gzip, Encoding::Zstd] {
            let one = compress(enc, &body).unwrap();
            assert!(one.len() < body.len() / 4, "{enc:?} compresses");
            // The same pieces through a compressor writing piece by piece.
            let mut c = Compressor::new(enc, Vec::new()).unwrap();
            for piece in body.chunks(PIECE) {
                c.write_piece(piece).unwrap();
            }
            assert!(c.finish().unwrap() == one, "{enc:?} is deterministic");
            let mut back = Vec::new();
            match enc {
                Encoding::Gzip => {
                    flate2::read::GzDecoder::new(&one[..])
                        .read_to_end(&mut back)
                        .unwrap();
                }
                _ => back = zstd::stream::decode_all(&one[..]).unwrap(),
            }
            assert!(back == body, "{enc:?} round trip");
        }
    }
}
