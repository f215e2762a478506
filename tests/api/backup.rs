//! Online backup, restore and export through the control socket, against
//! the real binary: a backup taken while webhooks are applied is a
//! consistent prefix of them; a restored server answers every route as the
//! original did at the backup; export while running equals export offline;
//! every refusal changes nothing.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;
use crate::process::Process;
use crate::workos::*;

/// Runs `rollcall --data <data> <args>`.
fn cli(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("ROLLCALL_DATA")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn cli_async(data: &Path, args: &[&str]) -> Output {
    let data = data.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&data, &args)
    })
    .await
    .unwrap()
}

async fn post(client: &reqwest::Client, base: &str, event: &Value) {
    let body = serde_json::to_vec(event).unwrap();
    let signature = sign_webhook(WEBHOOK_SECRET.as_bytes(), &body, now_ms());
    let resp = client
        .post(format!("{base}/webhooks/workos"))
        .header("content-type", "application/json")
        .header("WorkOS-Signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(status, StatusCode::OK, "{}", resp.text().await.unwrap());
}

fn numbered_user(i: u64) -> Value {
    user(
        "directory_A",
        &format!("directory_user_{i:05}"),
        &format!("u{i:05}@acme.test"),
        i as i64 + 1,
    )
}

/// Two organizations with users, groups and memberships, suspended users
/// among them, enough for several pages.
async fn seed(client: &reqwest::Client, base: &str) {
    let mut events = vec![
        activated("directory_A", ORG_A, 0),
        activated("directory_B", ORG_B, 0),
        group_event(
            "created",
            group("directory_A", "directory_group_1", "Eng", 1),
            1,
        ),
        group_event(
            "created",
            group("directory_A", "directory_group_2", "Ops", 1),
            1,
        ),
    ];
    for i in 0..5 {
        events.push(user_event("created", numbered_user(i), i as i64 + 2));
    }
    events.push(user_event(
        "created",
        bare_user("directory_A", "directory_user_bare", "bare@acme.test", 9),
        9,
    ));
    events.push(user_event(
        "created",
        user("directory_B", "directory_user_b1", "b1@globex.test", 3),
        3,
    ));
    events.push(member_event(
        "user_added",
        "directory_A",
        numbered_user(1),
        group("directory_A", "directory_group_1", "Eng", 1),
        10,
    ));
    for e in &events {
        post(client, base, e).await;
    }
}

/// The WorkOS ids of directory A's users in the database file `path`, and
/// the user count its directory record says it has.
fn users_in(path: &Path) -> (Vec<String>, u64) {
    let store = rollcall::store::Store::open(path, Default::default()).unwrap();
    let snapshot = store.snapshot().unwrap();
    let dir = snapshot
        .all_directories()
        .unwrap()
        .into_iter()
        .find(|d| d.workos_directory_id == "directory_A")
        .unwrap();
    let mut ids = Vec::new();
    snapshot
        .visit_users(dir.id, |u| {
            ids.push(u.workos_directory_user_id);
            Ok::<_, rollcall::store::StoreError>(())
        })
        .unwrap();
    (ids, dir.user_count)
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The files a restore kept in `dir`: `rollcall.redb.before-restore-…`.
fn kept_files(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .filter(|n| n.starts_with("rollcall.redb.before-restore-"))
        .collect()
}

#[tokio::test]
async fn a_backup_taken_under_webhooks_is_a_consistent_prefix_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db").join("rollcall.redb");
    let server = Process::start(dir.path(), &data, &["--create"]);
    let client = reqwest::Client::new();
    post(&client, &server.base, &activated("directory_A", ORG_A, 0)).await;

    const USERS: u64 = 400;
    let acked = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, base, acked) = (client.clone(), server.base.clone(), acked.clone());
        tokio::spawn(async move {
            for i in 0..USERS {
                post(
                    &client,
                    &base,
                    &user_event("created", numbered_user(i), i as i64 + 1),
                )
                .await;
                acked.store(i + 1, Ordering::SeqCst);
            }
        })
    };
    let mut backups = Vec::new();
    for n in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let file = dir.path().join(format!("backup-{n}.redb"));
        let before = acked.load(Ordering::SeqCst);
        let out = cli_async(&data, &["backup", file.to_str().unwrap()]).await;
        let after = acked.load(Ordering::SeqCst);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stderr(&out).contains("backed up to"), "{}", stderr(&out));
        backups.push((file, before, after));
    }
    writer.await.unwrap();
    let (status, _) = ready(&server.base).await;
    assert_eq!(status, StatusCode::OK, "the server kept serving");

    let mut taken = Vec::new();
    for (file, before, after) in &backups {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a backup is owner-only");
        let (ids, count) = users_in(file);
        let k = ids.len() as u64;
        // Every write acknowledged before the backup began is in it, none
        // that was not yet sent after it ended, and nothing in between is
        // missing: a prefix, with the directory's count agreeing.
        assert!(
            (*before..=*after + 1).contains(&k),
            "{k} users, acknowledged {before} before and {after} after"
        );
        let expected: Vec<String> = (0..k).map(|i| format!("directory_user_{i:05}")).collect();
        assert_eq!(ids, expected, "a prefix of the writes");
        assert_eq!(count, k, "the directory's count matches its users");
        taken.push(k);
    }
    assert!(
        taken.windows(2).all(|w| w[0] <= w[1]),
        "later backups hold more: {taken:?}"
    );
    assert!(
        taken[0] < USERS,
        "the first backup ran while writes were still coming: {taken:?}"
    );
    assert!(
        files_in(dir.path()).iter().all(|n| !n.ends_with(".tmp")),
        "no temp file left: {:?}",
        files_in(dir.path())
    );
    drop(server);
}

#[tokio::test]
async fn a_restored_server_answers_every_route_as_the_original_did_at_the_backup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db").join("rollcall.redb");
    let server = Process::start(dir.path(), &data, &["--create"]);
    let client = reqwest::Client::new();
    seed(&client, &server.base).await;
    let orgs = [ORG_A, ORG_B];
    let at_backup = every_answer(&client, &server.base, &orgs).await;
    let backup = dir.path().join("nightly.redb");
    let out = cli(&data, &["backup", backup.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Changes after the backup: a user deleted, one added, a group renamed.
    post(
        &client,
        &server.base,
        &user_event("deleted", numbered_user(0), 100),
    )
    .await;
    post(
        &client,
        &server.base,
        &user_event("created", numbered_user(50), 100),
    )
    .await;
    post(
        &client,
        &server.base,
        &group_event(
            "updated",
            group("directory_A", "directory_group_2", "Platform", 101),
            101,
        ),
    )
    .await;
    let changed = every_answer(&client, &server.base, &orgs).await;
    assert!(changed != at_backup, "the later writes changed answers");

    let refused = cli(&data, &["restore", backup.to_str().unwrap()]);
    assert!(!refused.status.success(), "restore while the server runs");
    assert!(
        stderr(&refused).contains("stop it before restoring"),
        "{}",
        stderr(&refused)
    );
    assert!(kept_files(&dir.path().join("db")).is_empty());
    assert_same_answers(
        &every_answer(&client, &server.base, &orgs).await,
        &changed,
        "a refused restore changes nothing",
    );

    assert!(server.stop().success());
    assert!(
        !dir.path().join("db/rollcall.redb.sock").exists(),
        "the socket is removed at shutdown"
    );
    let out = cli(&data, &["restore", backup.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("restored"), "{}", stderr(&out));
    let kept = kept_files(&dir.path().join("db"));
    assert_eq!(kept.len(), 1, "the previous file is kept");
    let kept = dir.path().join("db").join(&kept[0]);
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let restored = Process::start(dir.path(), &data, &["--create"]);
    let after = every_answer(&client, &restored.base, &orgs).await;
    assert_same_answers(&after, &at_backup, "restored vs. original at the backup");
    assert!(
        after
            .iter()
            .any(|a| String::from_utf8_lossy(&a.body).contains("u00000@acme.test")),
        "the user deleted after the backup is back"
    );
    drop(restored);

    // The kept file is the state just before the restore.
    let (ids, _) = users_in(&kept);
    assert!(ids.contains(&"directory_user_00050".to_owned()));
    assert!(!ids.contains(&"directory_user_00000".to_owned()));
}

#[tokio::test]
async fn export_while_running_equals_export_offline() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db").join("rollcall.redb");
    let server = Process::start(dir.path(), &data, &["--create"]);
    let client = reqwest::Client::new();
    seed(&client, &server.base).await;

    let online = dir.path().join("online.ndjson");
    let out = cli(&data, &["export", online.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("exported 2 directories, 7 users, 2 groups, 1 memberships"),
        "{}",
        stderr(&out)
    );
    let to_stdout = cli(&data, &["export"]);
    assert!(to_stdout.status.success(), "{}", stderr(&to_stdout));
    assert!(server.stop().success());

    let offline = dir.path().join("offline.ndjson");
    let out = cli(&data, &["export", offline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (online, offline) = (
        std::fs::read(&online).unwrap(),
        std::fs::read(&offline).unwrap(),
    );
    assert!(online == offline, "the same bytes online and offline");
    assert!(to_stdout.stdout == offline, "stdout alike");
    let lines: Vec<Value> = offline
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2 + 7 + 2 + 1);
    assert!(
        lines
            .iter()
            .any(|l| l["object"] == "directory_user" && l["email"] == "b1@globex.test")
    );
    assert!(lines.iter().all(|l| l.get("end").is_none()), "no trailer");
}

#[tokio::test]
async fn restore_refuses_a_damaged_or_foreign_file_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db").join("rollcall.redb");
    let server = Process::start(dir.path(), &data, &["--create"]);
    let client = reqwest::Client::new();
    seed(&client, &server.base).await;
    let good = dir.path().join("good.redb");
    let out = cli(&data, &["backup", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(server.stop().success());
    let export = dir.path().join("export.ndjson");
    assert!(
        cli(&data, &["export", export.to_str().unwrap()])
            .status
            .success()
    );
    let live = std::fs::read(&data).unwrap();
    let folder = files_in(&dir.path().join("db"));

    let good_bytes = std::fs::read(&good).unwrap();
    let garbage = dir.path().join("garbage.redb");
    std::fs::write(&garbage, b"this is not a database\n".repeat(1000)).unwrap();
    let truncated = dir.path().join("truncated.redb");
    std::fs::write(&truncated, &good_bytes[..good_bytes.len() / 2]).unwrap();
    let flipped = dir.path().join("flipped.redb");
    let mut bytes = good_bytes.clone();
    for b in &mut bytes[good_bytes.len() / 2..good_bytes.len() / 2 + 4096] {
        *b ^= 0x5a;
    }
    std::fs::write(&flipped, &bytes).unwrap();
    let empty = dir.path().join("empty.redb");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("missing.redb");

    for (bad, why) in [
        (&garbage, "not a redb database"),
        (&truncated, "failed its check"),
        (&flipped, "failed its check"),
        (&empty, "not a rollcall database"),
        (&export, "not a redb database"),
        (&missing, "no backup file"),
        (&data, "the live database itself"),
    ] {
        let out = cli(&data, &["restore", bad.to_str().unwrap()]);
        assert!(!out.status.success(), "{} was restored", bad.display());
        assert!(
            stderr(&out).contains("nothing restored") && stderr(&out).contains(why),
            "{}: {}",
            bad.display(),
            stderr(&out)
        );
        assert!(
            std::fs::read(&data).unwrap() == live,
            "the live file is untouched"
        );
        assert_eq!(
            files_in(&dir.path().join("db")),
            folder,
            "no file left behind"
        );
    }
    assert!(
        std::fs::read(&good).unwrap() == good_bytes,
        "backups are only read"
    );

    // The good one is accepted, and an offline backup works too.
    let out = cli(&data, &["restore", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let offline = dir.path().join("offline.redb");
    let out = cli(&data, &["backup", offline.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(users_in(&offline).0.len(), 6);

    // Onto a new machine: no database, no folder yet.
    let fresh = dir.path().join("new").join("place").join("rollcall.redb");
    let out = cli(&fresh, &["restore", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("kept as"), "{}", stderr(&out));
    let mode = std::fs::metadata(fresh.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(users_in(&fresh).0.len(), 6);
}

#[tokio::test]
async fn backup_refuses_the_live_file_and_bad_targets() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db").join("rollcall.redb");
    let server = Process::start(dir.path(), &data, &["--create"]);
    let client = reqwest::Client::new();
    seed(&client, &server.base).await;
    let folder = files_in(&dir.path().join("db"));
    let before = every_answer(&client, &server.base, &[ORG_A]).await;

    let other_spelling = dir.path().join("db/../db/./rollcall.redb");
    let link = dir.path().join("link.redb");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    for (target, why) in [
        (data.clone(), "over the live database"),
        (other_spelling, "over the live database"),
        (link, "over the live database"),
        (dir.path().join("db"), "is a folder"),
        (dir.path().join("no/such/folder/b.redb"), "cannot create"),
    ] {
        let out = cli(&data, &["backup", target.to_str().unwrap()]);
        assert!(!out.status.success(), "{}", target.display());
        assert!(
            stderr(&out).contains("the backup failed") && stderr(&out).contains(why),
            "{}: {}",
            target.display(),
            stderr(&out)
        );
        assert_eq!(files_in(&dir.path().join("db")), folder);
    }
    // A relative target is resolved by the CLI, against its own folder.
    let out = Command::new(env!("CARGO_BIN_EXE_rollcall"))
        .current_dir(dir.path())
        .args(["--data", "db/rollcall.redb", "backup", "relative.redb"])
        .env_remove("ROLLCALL_DATA")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(users_in(&dir.path().join("relative.redb")).0.len(), 6);
    assert_same_answers(
        &every_answer(&client, &server.base, &[ORG_A]).await,
        &before,
        "refused backups change nothing",
    );
}

/// One raw exchange on the control socket.
fn exchange(socket: &Path, request: &[u8]) -> Value {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.write_all(request).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert_eq!(answer.lines().count(), 1, "one answer line: {answer}");
    serde_json::from_str(&answer).unwrap()
}

#[tokio::test]
async fn the_control_socket_is_owner_only_and_refuses_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db").join("rollcall.redb");
    let server = Process::start(dir.path(), &data, &["--create"]);
    let client = reqwest::Client::new();
    seed(&client, &server.base).await;
    let socket: PathBuf = dir.path().join("db/rollcall.redb.sock");
    let meta = std::fs::symlink_metadata(&socket).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    let folder_mode = std::fs::metadata(dir.path().join("db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(folder_mode & 0o777, 0o700, "data folder mode");

    let folder = files_in(&dir.path().join("db"));
    let outside = files_in(dir.path());
    let before = every_answer(&client, &server.base, &[ORG_A]).await;
    let target = dir.path().join("x.redb");
    let target = target.to_str().unwrap();
    for (request, why) in [
        (b"hello\n".to_vec(), "malformed request"),
        (
            b"{\"op\":\"drop-everything\"}\n".to_vec(),
            "unknown variant",
        ),
        (b"{\"op\":\"backup\"}\n".to_vec(), "missing field `path`"),
        (
            format!("{{\"op\":\"backup\",\"path\":\"{target}\",\"force\":true}}\n").into_bytes(),
            "unknown field `force`",
        ),
        (
            b"{\"op\":\"backup\",\"path\":\"relative.redb\"}\n".to_vec(),
            "not absolute",
        ),
        (
            format!("{{\"op\":\"backup\",\"path\":\"{target}\"}}").into_bytes(),
            "ending in a newline",
        ),
        (vec![b'x'; 70_000], "at most"),
        (Vec::new(), "ending in a newline"),
    ] {
        let answer = exchange(&socket, &request);
        assert_eq!(answer["ok"], false, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(why),
            "{why}: {answer}"
        );
    }
    assert_eq!(files_in(&dir.path().join("db")), folder, "nothing created");
    assert_eq!(files_in(dir.path()), outside, "nothing created");

    // A good request on the same socket works.
    let answer = exchange(
        &socket,
        format!("{{\"op\":\"backup\",\"path\":\"{target}\"}}\n").as_bytes(),
    );
    assert_eq!(answer["ok"], true, "{answer}");
    assert_eq!(answer["backup"]["users"], 7);
    assert_eq!(answer["backup"]["directories"], 2);
    assert_same_answers(
        &every_answer(&client, &server.base, &[ORG_A]).await,
        &before,
        "control requests change no answer",
    );

    // A crash leaves the socket; the next start replaces it.
    server.kill();
    assert!(socket.exists(), "SIGKILL leaves the socket behind");
    let out = cli(&data, &["export"]);
    assert!(
        out.status.success(),
        "a stale socket falls back to the file: {}",
        stderr(&out)
    );
    let server = Process::start(dir.path(), &data, &["--create"]);
    let online = cli(&data, &["export"]);
    assert!(online.status.success(), "{}", stderr(&online));
    assert!(
        online.stdout == out.stdout,
        "the same export through the new socket"
    );
    assert_eq!(
        out.stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        12
    );
    assert!(server.stop().success());
    assert!(!socket.exists(), "removed at shutdown");
}

#[tokio::test]
async fn no_control_socket_in_a_folder_every_user_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("shared");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    let data = folder.join("rollcall.redb");
    let server = Process::start(dir.path(), &data, &["--create"]);
    let (status, _) = ready(&server.base).await;
    assert_eq!(status, StatusCode::OK, "the server still serves");
    assert!(!folder.join("rollcall.redb.sock").exists());

    let target = dir.path().join("b.redb");
    let out = cli(&data, &["backup", target.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no server answers on its control socket"),
        "{}",
        stderr(&out)
    );
    assert!(!target.exists());

    // A socket-shaped trap left there by someone else is not talked to.
    drop(server);
    std::fs::write(folder.join("rollcall.redb.sock"), b"").unwrap();
    let out = cli(&data, &["export"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not a socket"), "{}", stderr(&out));
}

/// The demo data set with its directory users copied `copies` more times
/// (new ids and emails): an export of several megabytes.
/// `data` (in its own 0700 folder) holding `copies` copies of the demo.
fn import_big(dir: &Path, data: &Path, copies: usize) {
    let big = big_import(dir, copies);
    let folder = data.parent().unwrap();
    std::fs::create_dir(folder).unwrap();
    std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = cli(data, &["import", big.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn big_import(dir: &Path, copies: usize) -> PathBuf {
    let demo =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/demo.ndjson")).unwrap();
    let mut out = demo.clone();
    for k in 0..copies {
        for line in demo
            .lines()
            .filter(|l| l.starts_with("{\"object\":\"directory_user\""))
        {
            out.push_str(
                &line
                    .replace("directory_user_", &format!("directory_user_c{k}"))
                    .replace('@', &format!("+c{k}@")),
            );
            out.push('\n');
        }
    }
    let file = dir.join("big.ndjson");
    std::fs::write(&file, out).unwrap();
    file
}

fn logged(server: &Process, message: &str) -> usize {
    server
        .logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains(message))
        .count()
}

#[tokio::test]
async fn a_stalled_export_is_cut_off_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db").join("rollcall.redb");
    import_big(dir.path(), &data, 8);
    let server = Process::start_with_env(
        dir.path(),
        &data,
        &[],
        &[("ROLLCALL_TEST_EXPORT_WRITE_TIMEOUT_MS", "1500")],
    );
    let socket = dir.path().join("db/rollcall.redb.sock");
    // Two clients ask for the export and never read it.
    let stalled: Vec<UnixStream> = (0..2)
        .map(|_| {
            let mut s = UnixStream::connect(&socket).unwrap();
            s.write_all(b"{\"op\":\"export\"}\n").unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A third is refused while they hold their places.
    let busy = exchange(&socket, b"{\"op\":\"export\"}\n");
    assert_eq!(busy["ok"], false, "{busy}");
    assert!(
        busy["error"].as_str().unwrap().contains("already running"),
        "{busy}"
    );
    // Both are abandoned after the write timeout.
    let started = std::time::Instant::now();
    while logged(&server, "export abandoned") < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the stalled exports were not cut off: {:?}",
            server.logs.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _) = ready(&server.base).await;
    assert_eq!(status, StatusCode::OK, "the server keeps serving");
    // Everything was released: a backup and a full export work.
    let backup = dir.path().join("after.redb");
    let out = cli_async(&data, &["backup", backup.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let export = dir.path().join("after.ndjson");
    let out = cli_async(&data, &["export", export.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(std::fs::metadata(&export).unwrap().len() > 2 << 20);
    drop(stalled);
    assert!(server.stop().success());
}

#[tokio::test]
async fn a_backup_removes_stale_temps_and_refuses_a_folder_anyone_may_write() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db").join("rollcall.redb");
    let server = Process::start(dir.path(), &data, &["--create"]);
    let client = reqwest::Client::new();
    seed(&client, &server.base).await;
    let folder = dir.path().join("backups");
    std::fs::create_dir(&folder).unwrap();
    // Left by a crashed server (no such pid), and by a live one (this test).
    let dead = folder.join(".nightly.redb.backup-4000000000-17.tmp");
    let live = folder.join(format!(
        ".nightly.redb.backup-{}-18.tmp",
        std::process::id()
    ));
    std::fs::write(&dead, b"stale").unwrap();
    std::fs::write(&live, b"in progress").unwrap();
    let target = folder.join("nightly.redb");
    let out = cli(&data, &["backup", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!dead.exists(), "the dead process's temp is removed");
    assert!(live.exists(), "a live process's temp is kept");
    assert_eq!(users_in(&target).0.len(), 6);

    // A folder every user may write, not sticky: refused.
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
    let other = folder.join("other.redb");
    let out = cli(&data, &["backup", other.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("writable by every user"),
        "{}",
        stderr(&out)
    );
    assert!(!other.exists());
    // Sticky (like /tmp): allowed.
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = cli(&data, &["backup", other.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(server);
}

#[tokio::test]
async fn restore_replaces_a_damaged_live_file_and_never_overwrites_a_kept_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db").join("rollcall.redb");
    let server = Process::start(dir.path(), &data, &["--create"]);
    let client = reqwest::Client::new();
    seed(&client, &server.base).await;
    let good = dir.path().join("good.redb");
    let out = cli(&data, &["backup", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let at_backup = every_answer(&client, &server.base, &[ORG_A, ORG_B]).await;
    assert!(server.stop().success());

    // Held by another process (no server socket): refused, untouched.
    let held = std::fs::File::open(&data).unwrap();
    held.try_lock().unwrap();
    let before = std::fs::read(&data).unwrap();
    let out = cli(&data, &["restore", good.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("held by another process"),
        "{}",
        stderr(&out)
    );
    assert!(std::fs::read(&data).unwrap() == before);
    drop(held);

    // The live file damaged beyond opening: restored over.
    let len = std::fs::metadata(&data).unwrap().len() as usize;
    let noise: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
    std::fs::write(&data, &noise).unwrap();
    let out = cli(&data, &["restore", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let kept = kept_files(&dir.path().join("db"));
    assert_eq!(kept.len(), 1);
    assert!(std::fs::read(dir.path().join("db").join(&kept[0])).unwrap() == noise);

    // Again: the first kept file is not overwritten.
    let out = cli(&data, &["restore", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let kept_now = kept_files(&dir.path().join("db"));
    assert_eq!(kept_now.len(), 2, "{kept_now:?}");
    assert!(kept_now.contains(&kept[0]));
    assert!(std::fs::read(dir.path().join("db").join(&kept[0])).unwrap() == noise);

    let restored = Process::start(dir.path(), &data, &[]);
    let after = every_answer(&client, &restored.base, &[ORG_A, ORG_B]).await;
    assert_same_answers(&after, &at_backup, "restored over a damaged file");
    drop(restored);
}

#[tokio::test]
async fn a_restore_as_root_gives_the_file_the_data_folders_owner() {
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db").join("rollcall.redb");
    let server = Process::start(dir.path(), &data, &["--create"]);
    seed(&reqwest::Client::new(), &server.base).await;
    let good = dir.path().join("good.redb");
    let out = cli(&data, &["backup", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(server);

    use std::os::unix::fs::MetadataExt;
    let service = dir.path().join("service");
    std::fs::create_dir(&service).unwrap();
    std::fs::set_permissions(&service, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::chown(&service, Some(65534), Some(65534)).unwrap();
    let live = service.join("rollcall.redb");
    let out = cli(&live, &["restore", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let meta = std::fs::metadata(&live).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(users_in(&live).0.len(), 6);
}

#[tokio::test]
async fn one_backup_at_a_time_and_a_server_stopped_mid_backup_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db").join("rollcall.redb");
    import_big(dir.path(), &data, 20);
    let server = Process::start(dir.path(), &data, &[]);
    let folder = dir.path().join("backups");
    std::fs::create_dir(&folder).unwrap();
    let target = folder.join("nightly.redb");
    let mut stream = UnixStream::connect(dir.path().join("db/rollcall.redb.sock")).unwrap();
    let request = format!("{}\n", serde_json::json!({"op": "backup", "path": target}));
    stream.write_all(request.as_bytes()).unwrap();
    // Stop as soon as the copy has begun.
    let started = std::time::Instant::now();
    while files_in(&folder).is_empty() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    // One backup at a time.
    let second = exchange(
        &dir.path().join("db/rollcall.redb.sock"),
        format!(
            "{}\n",
            serde_json::json!({"op": "backup", "path": folder.join("second.redb")})
        )
        .as_bytes(),
    );
    assert_eq!(second["ok"], false, "{second}");
    assert_eq!(second["error"], "a backup is already running", "{second}");
    let logs = server.logs.clone();
    assert!(server.stop().success());
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    eprintln!("the backup's answer: {answer}");
    let left = files_in(&folder);
    assert!(
        left.iter().all(|n| !n.ends_with(".tmp")),
        "a temp file was left: {left:?}"
    );
    // Either cancelled (nothing written) or finished first (a whole copy).
    if answer.contains("\"ok\":true") {
        assert_eq!(left, vec!["nightly.redb".to_owned()]);
    } else {
        assert!(left.is_empty(), "{left:?}");
        assert!(
            answer.contains("cancelled")
                || logs.lock().unwrap().iter().any(|l| l.contains("cancelled")),
            "{answer}"
        );
    }
}
