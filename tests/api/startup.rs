//! Starting the real binary on bad ground: a foreign, truncated or damaged
//! database file, a file another process holds, no verification configured —
//! each a clear message and exit status 1, never a crash.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// An HS256 secret long enough to be accepted (32 bytes).
const STRONG_SECRET: &str = "0123456789abcdef0123456789abcdef";

fn serve(data: &Path, extra: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            STRONG_SECRET,
        ])
        .args(extra)
        .arg("--data")
        .arg(data)
        .env_remove("ROLLCALL_DATA")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A refused start exits at once; a server that starts is stopped here.
    for _ in 0..100 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        sigterm(child.id());
    }
    child.wait_with_output().unwrap()
}

fn sigterm(pid: u32) {
    let _ = Command::new("kill").arg(pid.to_string()).status();
}

fn assert_refused(out: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a clean failure, not a crash: {stderr}"
    );
    assert!(
        stderr.contains(message),
        "expected {message:?} in: {stderr}"
    );
}

fn demo_database(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("demo.redb");
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--data")
        .arg(&data)
        .args([
            "import",
            concat!(env!("CARGO_MANIFEST_DIR"), "/data/demo.ndjson"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    data
}

#[test]
fn a_foreign_file_is_refused_clearly() {
    let dir = TempDir::new().unwrap();
    for (name, bytes) in [
        ("text.redb", b"hello, I am a text file\n".to_vec()),
        (
            "random.redb",
            (0..200_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect(),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();

        let out = serve(&path, &[]);

        assert_refused(&out, "is not a rollcall database");
    }
}

#[test]
fn a_truncated_or_damaged_database_is_refused_clearly() {
    let dir = TempDir::new().unwrap();
    let good = demo_database(dir.path());
    let len = std::fs::metadata(&good).unwrap().len();

    let truncated = dir.path().join("truncated.redb");
    std::fs::copy(&good, &truncated).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(len / 2 + 1)
        .unwrap();
    assert_refused(&serve(&truncated, &[]), "is not a rollcall database");

    let damaged_header = dir.path().join("header.redb");
    let mut bytes = std::fs::read(&good).unwrap();
    bytes[16..80].fill(0xa5);
    std::fs::write(&damaged_header, &bytes).unwrap();
    assert_refused(&serve(&damaged_header, &[]), "is not a rollcall database");

    // Damage inside the data: found by --check-integrity at start.
    let damaged_page = dir.path().join("page.redb");
    let mut bytes = std::fs::read(&good).unwrap();
    let at = (len as usize / 2) & !4095;
    bytes[at..at + 4096].fill(0x5a);
    std::fs::write(&damaged_page, &bytes).unwrap();
    assert_refused(&serve(&damaged_page, &["--check-integrity"]), "rollcall:");
}

#[test]
fn a_database_held_by_another_process_is_refused_clearly() {
    let dir = TempDir::new().unwrap();
    let data = demo_database(dir.path());
    let mut first = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            STRONG_SECRET,
            "--data",
        ])
        .arg(&data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let second = serve(&data, &[]);

    sigterm(first.id());
    let status = first.wait().unwrap();
    assert_refused(&second, "in use by another process");
    assert!(
        status.success(),
        "the first server stops cleanly on SIGTERM"
    );
}

#[test]
fn serve_refuses_to_start_without_token_verification() {
    let dir = TempDir::new().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path().join("x.redb"))
        .env_remove("ROLLCALL_JWT_SECRET")
        .env_remove("ROLLCALL_JWKS_FILE")
        .env_remove("ROLLCALL_JWKS_URL")
        .output()
        .unwrap();

    assert_refused(&out, "no token verification is configured");
}

#[test]
fn a_missing_data_folder_is_refused_unless_creating_it_was_asked_for() {
    let dir = TempDir::new().unwrap();
    let typo = dir.path().join("dta").join("rollcall.redb");

    let out = serve(&typo, &[]);
    assert_refused(&out, "does not exist (is --data / ROLLCALL_DATA right?)");
    assert_refused(&out, "--create");
    assert!(!typo.parent().unwrap().exists(), "nothing was created");

    let import = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["import", "/dev/null", "--data"])
        .arg(&typo)
        .env_remove("ROLLCALL_DATA")
        .output()
        .unwrap();
    assert_refused(&import, "does not exist");
    assert!(!typo.parent().unwrap().exists(), "nothing was created");

    // Asked for: created, and the log says which file is served and that
    // it is new; the next start says it is the same file, not a new one.
    let out = serve(&typo, &["--create"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let absolute = typo.display().to_string();
    assert!(
        stderr.contains("serving a new database (just created)") && stderr.contains(&absolute),
        "{stderr}"
    );
    assert!(typo.exists());
    let out = serve(&typo, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("serving the database") && !stderr.contains("just created"),
        "{stderr}"
    );
}
