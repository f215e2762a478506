//! The dev quickstart behind `rollcall serve --dev`: secrets kept in the data
//! folder (created once, mode 0600), the demo organizations loaded into a new
//! database, and a ready-to-paste `curl` line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::ingest::ndjson::{self, ImportReport, NdjsonError};
use crate::store::Store;

/// The demo data, compiled in so `--dev` works from any folder; a
/// `demo.ndjson` in the data folder takes precedence.
pub const DEMO_NDJSON: &str = include_str!("../data/demo.ndjson");
/// The organization the dev token is minted for.
pub const DEMO_ORG: &str = "org_01HDEMOACME0000000000000000";

const JWT_SECRET_FILE: &str = "dev-secret";
const WEBHOOK_SECRET_FILE: &str = "dev-webhook-secret";

/// The development secrets.
pub struct DevSecrets {
    pub jwt_secret: String,
    pub webhook_secret: String,
}

/// Reads the dev secrets from `data_dir`, creating them on first use.
///
/// # Errors
/// When the folder or the files cannot be created or read.
pub fn secrets(data_dir: &Path) -> std::io::Result<DevSecrets> {
    crate::store::create_private_dir(data_dir)?;
    Ok(DevSecrets {
        jwt_secret: read_or_create(&data_dir.join(JWT_SECRET_FILE))?,
        webhook_secret: read_or_create(&data_dir.join(WEBHOOK_SECRET_FILE))?,
    })
}

/// Reads the dev JWT secret if `serve --dev` created one.
pub fn existing_jwt_secret(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(JWT_SECRET_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn read_or_create(path: &Path) -> std::io::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        let s = s.trim().to_owned();
        if !s.is_empty() {
            return Ok(s);
        }
    }
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let secret = hex::encode(bytes);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    writeln!(file, "{secret}")?;
    Ok(secret)
}

/// Loads the demo organizations into a database this start created.
///
/// # Errors
/// When the demo file is unreadable or invalid, or the store fails.
pub fn load_demo_if_new(
    store: &Store,
    data_dir: &Path,
) -> Result<Option<ImportReport>, NdjsonError> {
    if !store.was_created() {
        return Ok(None);
    }
    let local: PathBuf = data_dir.join("demo.ndjson");
    let report = match std::fs::read(&local) {
        Ok(bytes) => ndjson::import(store, bytes.as_slice(), |_| {})?,
        Err(_) => ndjson::import(store, DEMO_NDJSON.as_bytes(), |_| {})?,
    };
    Ok(Some(report))
}

/// The first directory of the demo organization, for the curl line.
pub fn first_demo_directory(store: &Store) -> Option<String> {
    let snapshot = store.snapshot().ok()?;
    let dirs = snapshot.directories_of_org(DEMO_ORG).ok()?;
    dirs.first().map(|d| d.id.to_string())
}

/// The banner printed at start in dev mode.
pub fn banner(
    addr: SocketAddr,
    token: &str,
    directory: Option<&str>,
    webhook_secret: &str,
) -> String {
    let base = format!("http://{addr}");
    let users = match directory {
        Some(id) => format!("{base}/api/directories/{id}/users"),
        None => format!("{base}/api/directories"),
    };
    format!(
        "\nrollcall is running in dev mode (demo organization {DEMO_ORG}).\n\
         Try:\n\n  curl -H 'Authorization: Bearer {token}' {users}\n\n\
         Directories: curl -H 'Authorization: Bearer {token}' {base}/api/directories\n\
         Webhook secret (dev): {webhook_secret}\n\
         More tokens: rollcall token --org {DEMO_ORG}\n"
    )
}
