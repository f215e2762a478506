//! A careless operator's secrets: a variable set but empty (an `.env`
//! template, an unset compose variable), a one-character or blank secret,
//! a world-readable database. The server refuses to start on the first
//! kinds — naming the flag and the variable — rather than accept tokens
//! and webhooks signed with a key anyone can guess, and it creates its
//! files owner-only.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rollcall::app::{Application, StartupError};
use tempfile::TempDir;

use crate::helpers::*;

/// Runs `rollcall serve` with `args` and `env` on a fresh database; a
/// server that does start is stopped after a moment.
fn serve(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rollcall"));
    cmd.args(["serve", "--create", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.join("db").join("rollcall.redb"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in [
        "ROLLCALL_JWT_SECRET",
        "ROLLCALL_JWKS_FILE",
        "ROLLCALL_JWKS_URL",
        "ROLLCALL_WORKOS_WEBHOOK_SECRET",
        "ROLLCALL_WORKOS_API_KEY",
        "ROLLCALL_JWT_AUDIENCE",
        "ROLLCALL_DATA",
        "ROLLCALL_PUBLIC_URL",
    ] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    for _ in 0..60 {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
    }
    child.wait_with_output().unwrap()
}

fn jwks_file(dir: &Path) -> String {
    let path = dir.join("jwks.json");
    std::fs::write(&path, JWKS).unwrap();
    path.to_string_lossy().into_owned()
}

fn assert_refused_naming(out: &Output, names: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "refused cleanly: {stderr}");
    for name in names {
        assert!(stderr.contains(name), "expected {name:?} in: {stderr}");
    }
}

#[test]
fn an_empty_jwt_secret_variable_is_refused_even_beside_a_jwks() {
    let dir = TempDir::new().unwrap();
    let jwks = jwks_file(dir.path());
    let out = serve(
        dir.path(),
        &["--jwks-file", &jwks],
        &[("ROLLCALL_JWT_SECRET", "")],
    );
    assert_refused_naming(&out, &["ROLLCALL_JWT_SECRET", "--jwt-secret", "empty"]);
    assert!(
        !dir.path().join("db").join("rollcall.redb").exists(),
        "refused before the database was created"
    );
}

#[test]
fn blank_and_short_jwt_secrets_are_refused_from_flags_and_variables() {
    let dir = TempDir::new().unwrap();
    for secret in [" ", "x", "0123456789abcdef0123456789abcde"] {
        let out = serve(dir.path(), &["--jwt-secret", secret], &[]);
        assert_refused_naming(&out, &["ROLLCALL_JWT_SECRET"]);
        let out = serve(dir.path(), &[], &[("ROLLCALL_JWT_SECRET", secret)]);
        assert_refused_naming(&out, &["ROLLCALL_JWT_SECRET"]);
    }
}

#[test]
fn empty_webhook_secret_and_api_key_are_refused() {
    let dir = TempDir::new().unwrap();
    let jwks = jwks_file(dir.path());
    for (var, flag) in [
        ("ROLLCALL_WORKOS_WEBHOOK_SECRET", "--workos-webhook-secret"),
        ("ROLLCALL_WORKOS_API_KEY", "--workos-api-key"),
        ("ROLLCALL_JWKS_URL", "--jwks-url"),
        ("ROLLCALL_JWT_AUDIENCE", "--jwt-audience"),
    ] {
        for value in ["", " "] {
            let out = serve(dir.path(), &["--jwks-file", &jwks], &[(var, value)]);
            assert_refused_naming(&out, &[var, flag]);
            let out = serve(dir.path(), &["--jwks-file", &jwks, flag, value], &[]);
            assert_refused_naming(&out, &[var, flag]);
        }
    }
}

#[test]
fn a_public_url_without_a_scheme_is_refused_and_an_empty_one_is_the_default() {
    let dir = TempDir::new().unwrap();
    let jwks = jwks_file(dir.path());
    for url in ["rollcall.example.com", "https://", "ftp://x", "https://a b"] {
        let out = serve(
            dir.path(),
            &["--jwks-file", &jwks, "--public-url", url],
            &[],
        );
        assert_refused_naming(&out, &["ROLLCALL_PUBLIC_URL", "--public-url"]);
    }
    let out = serve(
        dir.path(),
        &["--jwks-file", &jwks],
        &[("ROLLCALL_PUBLIC_URL", "")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rollcall listening"), "{stderr}");
}

#[test]
fn a_short_webhook_secret_starts_with_a_warning() {
    let dir = TempDir::new().unwrap();
    let jwks = jwks_file(dir.path());
    let out = serve(
        dir.path(),
        &["--jwks-file", &jwks],
        &[("ROLLCALL_WORKOS_WEBHOOK_SECRET", "short")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rollcall listening"),
        "it started: {stderr}"
    );
    assert!(
        stderr.contains("ROLLCALL_WORKOS_WEBHOOK_SECRET") && stderr.contains("only 5 bytes"),
        "and warned: {stderr}"
    );
    assert!(
        !stderr.contains("short\""),
        "the secret itself is not logged"
    );
}

#[tokio::test]
async fn the_library_refuses_an_empty_secret_too() {
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.auth.hs256_secret = Some(Vec::new());
    match Application::build(s).await {
        Err(StartupError::Unsafe(e)) => assert!(e.to_string().contains("ROLLCALL_JWT_SECRET")),
        Err(other) => panic!("wrong refusal: {other}"),
        Ok(_) => panic!("an empty HS256 secret was accepted"),
    }
    let mut s = settings(dir.path());
    s.webhook_secret = Some(Vec::new());
    assert!(matches!(
        Application::build(s).await,
        Err(StartupError::Unsafe(_))
    ));
}

#[test]
fn token_refuses_to_sign_with_a_weak_secret() {
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .args(["token", "--org", ORG_A, "--jwt-secret", "s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("at least 32"), "{stderr}");
    assert!(out.stdout.is_empty(), "no token printed");
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_and_the_folders_rollcall_creates_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    let mut s = settings(dir.path());
    s.data = dir.path().join("new").join("nested").join("rollcall.redb");
    let app = spawn_with(s, std::sync::Arc::new(dir)).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&app.db_path), 0o600, "the database file");
    let folder = app.db_path.parent().unwrap();
    assert_eq!(mode(folder), 0o700, "the folder it created");
    assert_eq!(mode(folder.parent().unwrap()), 0o700, "and its parent");
    app.stop().await;
}

#[cfg(unix)]
#[test]
fn a_world_readable_database_is_reported_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    let jwks = jwks_file(dir.path());
    let first = serve(dir.path(), &["--jwks-file", &jwks], &[]);
    assert!(String::from_utf8_lossy(&first.stderr).contains("rollcall listening"));
    let db = dir.path().join("db").join("rollcall.redb");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = serve(dir.path(), &["--jwks-file", &jwks], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("readable or writable by other local users") && stderr.contains("644"),
        "{stderr}"
    );
}
