//! The `rollcall` commands: `serve`, `token`, `import`, `export`, `backup`,
//! `restore`, `compact`, `migrate`, `sync`. `main.rs`
//! only parses the command line and calls [`run`].

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::app::{self, Application, StartupError};
use crate::auth;
use crate::config::{
    self, BackupArgs, Command, DirectoryCommand, ExportArgs, HealthcheckArgs, ImportArgs,
    RestoreArgs, ServeArgs, Settings, TokenArgs,
};
use crate::dev;
use crate::ingest::committer::Committer;
use crate::ingest::ndjson::{self, NdjsonError};
use crate::ingest::sync::{self, SyncStatus};
use crate::ingest::workos_api::WorkosApi;
use crate::store::{Store, StoreError};

/// Why a command failed; printed as one line, exit status 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ndjson(#[from] NdjsonError),
    #[error("{0}")]
    Other(String),
}

/// Runs one command.
///
/// # Errors
/// A [`CliError`] describing what failed.
pub fn run(command: Command, data: &Path) -> Result<(), CliError> {
    match command {
        Command::Serve(args) => runtime()?.block_on(serve(data, *args)),
        Command::Token(args) => token(data, &args),
        Command::Import(args) => import(data, &args),
        Command::Export(args) => export(data, &args),
        Command::Backup(args) => backup(data, &args),
        Command::Restore(args) => restore(data, &args),
        Command::Compact => compact(data),
        Command::Migrate => migrate(data),
        Command::Sync(args) => runtime()?.block_on(sync(data, &args)),
        Command::Healthcheck(args) => runtime()?.block_on(healthcheck(&args)),
        Command::Directory(command) => directory(data, &command),
    }
}

/// `GET /readyz` on this machine's server. With TLS the certificate is not
/// checked: the check speaks to its own server on loopback, and a
/// certificate names a public host, not 127.0.0.1.
async fn healthcheck(args: &HealthcheckArgs) -> Result<(), CliError> {
    let mut addr = args.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if args.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{addr}/readyz");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs.max(1)))
        .danger_accept_invalid_certs(true)
        // Its own server on loopback: never through an HTTP(S)_PROXY set
        // for the WorkOS calls, never redirected elsewhere.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| CliError::Other(format!("cannot make an HTTP client: {e}")))?;
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| CliError::Other(format!("{url}: no answer: {e}")))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if status.is_success() {
        println!("{body}");
        Ok(())
    } else {
        Err(CliError::Other(format!("{url}: {status}: {body}")))
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("cannot start the runtime: {e}")))
}

async fn serve(data: &Path, args: ServeArgs) -> Result<(), CliError> {
    let mut settings = Settings::from_args(data, &args);
    let data_dir = config::data_dir(data);
    let secrets = if args.dev {
        let secrets = dev::secrets(&data_dir).map_err(|e| {
            CliError::Other(format!(
                "cannot keep dev secrets in {}: {e}",
                data_dir.display()
            ))
        })?;
        if settings.auth.hs256_secret.is_none() {
            settings.auth.hs256_secret = Some(secrets.jwt_secret.as_bytes().to_vec());
        }
        if settings.webhook_secret.is_none() {
            settings.webhook_secret = Some(secrets.webhook_secret.as_bytes().to_vec());
        }
        Some(secrets)
    } else {
        None
    };
    app::check_settings(&settings)?;
    check_data_folder(
        data,
        args.dev || args.create,
        "create it, or pass --create to have rollcall create it",
    )?;
    let store = app::open_store(&settings).await?;
    let file = std::path::absolute(data).unwrap_or_else(|_| data.to_owned());
    if store.was_created() {
        tracing::info!(file = %file.display(), "serving a new database (just created)");
    } else {
        tracing::info!(file = %file.display(), "serving the database");
    }
    if secrets.is_some() {
        let (s, dir) = (store.clone(), data_dir.clone());
        let loaded = tokio::task::spawn_blocking(move || dev::load_demo_if_new(&s, &dir))
            .await
            .map_err(|e| CliError::Other(e.to_string()))??;
        if let Some(report) = loaded {
            tracing::info!(
                directories = report.directories,
                users = report.users,
                groups = report.groups,
                "loaded the demo organizations"
            );
        }
    }
    let app = Application::build_with_store(settings.clone(), store.clone()).await?;
    if let Some(secrets) = &secrets {
        let token = auth::mint_hs256(
            secrets.jwt_secret.as_bytes(),
            dev::DEMO_ORG,
            "user_dev",
            Duration::from_secs(24 * 3600),
        )
        .map_err(|e| CliError::Other(e.to_string()))?;
        let directory = dev::first_demo_directory(&store);
        println!(
            "{}",
            dev::banner(
                app.local_addr(),
                &token,
                directory.as_deref(),
                &secrets.webhook_secret
            )
        );
    }
    drop(store);
    app.run_until_stopped(app::shutdown_signal()).await;
    Ok(())
}

fn token(data: &Path, args: &TokenArgs) -> Result<(), CliError> {
    let secret = args
        .jwt_secret
        .clone()
        .or_else(|| dev::existing_jwt_secret(&config::data_dir(data)))
        .ok_or_else(|| {
            CliError::Other(
                "no secret to sign with: pass --jwt-secret (or ROLLCALL_JWT_SECRET), or run `rollcall serve --dev` once to create the dev secret".into(),
            )
        })?;
    if args.org.trim().is_empty() {
        return Err(CliError::Other("--org must not be empty".into()));
    }
    config::check_hs256_secret(secret.as_bytes())
        .map_err(|e| CliError::Other(format!("refusing to sign: {e}")))?;
    if args.ttl > auth::DEFAULT_MAX_LIFETIME_SECS {
        eprintln!(
            "rollcall: warning: a server with the default --jwt-max-lifetime-secs ({}) refuses a token living {}s; minting it anyway",
            auth::DEFAULT_MAX_LIFETIME_SECS,
            args.ttl
        );
    }
    let token = auth::mint_hs256(
        secret.as_bytes(),
        &args.org,
        &args.sub,
        Duration::from_secs(args.ttl),
    )
    .map_err(|e| CliError::Other(e.to_string()))?;
    println!("{token}");
    Ok(())
}

/// A store error, saying what to do when a server holds the file.
fn held_elsewhere(e: StoreError) -> CliError {
    match e {
        StoreError::Locked(path) => CliError::Other(format!(
            "the database {} is held by another process (a running `rollcall serve`?); stop it first",
            path.display()
        )),
        e => e.into(),
    }
}

/// A mistyped `--data` must not silently become a new, empty database in a
/// new folder: the folder must exist unless creating it was asked for.
fn check_data_folder(data: &Path, may_create: bool, hint: &str) -> Result<(), CliError> {
    let folder = data.parent().filter(|p| !p.as_os_str().is_empty());
    match folder {
        Some(folder) if !may_create && !folder.is_dir() => Err(CliError::Other(format!(
            "the folder {} of the database {} does not exist (is --data / ROLLCALL_DATA right?); {hint}",
            folder.display(),
            data.display()
        ))),
        _ => Ok(()),
    }
}

fn open_for_cli(data: &Path) -> Result<Arc<Store>, CliError> {
    check_data_folder(data, false, "create it first")?;
    Store::open(data, Default::default())
        .map(Arc::new)
        .map_err(held_elsewhere)
}

/// Opens the database for `export` or `backup` when no server answered on
/// its control socket.
fn open_without_server(data: &Path) -> Result<Arc<Store>, CliError> {
    Store::open(data, Default::default())
        .map(Arc::new)
        .map_err(|e| match e {
            StoreError::Locked(path) => CliError::Other(format!(
                "the database {} is held by another process, but no server answers on its control socket {} (see the server's log for why it has none)",
                path.display(),
                socket_path(data).display()
            )),
            e => e.into(),
        })
}

#[cfg(unix)]
fn socket_path(data: &Path) -> std::path::PathBuf {
    crate::control::socket_path(data)
}

#[cfg(not(unix))]
fn socket_path(data: &Path) -> std::path::PathBuf {
    data.to_owned()
}

fn bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}

fn import(data: &Path, args: &ImportArgs) -> Result<(), CliError> {
    let file = File::open(&args.file)
        .map_err(|e| CliError::Other(format!("cannot open {}: {e}", args.file.display())))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let store = open_for_cli(data)?;
    let progress = bar(
        len,
        "{bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
    );
    let started = std::time::Instant::now();
    let report = ndjson::import(&store, BufReader::with_capacity(1 << 20, file), |n| {
        progress.set_position(n)
    });
    progress.finish_and_clear();
    let report = report?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "imported {} lines in {secs:.2}s: {} directories, {} users, {} groups, {} memberships, {} AuthKit users, {} organization memberships; {} changed, {} already so",
        report.lines,
        report.directories,
        report.users,
        report.groups,
        report.memberships,
        report.authkit_users,
        report.org_memberships,
        report.applied,
        report.unchanged
    );
    Ok(())
}

async fn sync(data: &Path, args: &crate::config::WorkosArgs) -> Result<(), CliError> {
    let settings = args.to_settings().ok_or_else(|| {
        CliError::Other("sync needs --workos-api-key (or ROLLCALL_WORKOS_API_KEY)".into())
    })?;
    if settings.api.api_key.trim().is_empty() {
        return Err(CliError::Other(
            "the WorkOS API key (--workos-api-key / ROLLCALL_WORKOS_API_KEY) is set but empty"
                .into(),
        ));
    }
    let store = {
        let data = data.to_owned();
        tokio::task::spawn_blocking(move || open_for_cli(&data))
            .await
            .map_err(|e| CliError::Other(e.to_string()))??
    };
    let (committer, committer_thread) = Committer::start(store.clone(), 512);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let status = Arc::new(SyncStatus::load(&store).map_err(CliError::Store)?);
    let ctx = sync::Context {
        api: WorkosApi::new(settings.api.clone(), stopped)
            .map_err(|e| CliError::Other(e.to_string()))?,
        store: store.clone(),
        committer: committer.clone(),
        settings: Arc::new(settings),
        status: status.clone(),
    };
    let progress = bar(0, "{bar:40} {pos}/{len} directories ({elapsed})");
    let watcher = {
        let (progress, status) = (progress.clone(), status.clone());
        tokio::spawn(async move {
            loop {
                if let Some([done, total]) = status.report().backfill_directories {
                    progress.set_length(total);
                    progress.set_position(done);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let result = tokio::select! {
        r = sync::once(&ctx) => r,
        () = app::shutdown_signal() => {
            let _ = stop.send(true);
            Err(sync::SyncError::Stopped)
        }
    };
    watcher.abort();
    progress.finish_and_clear();
    committer.stop().await;
    let _ = tokio::task::spawn_blocking(move || committer_thread.join()).await;
    let report = result.map_err(|e| CliError::Other(format!("sync failed: {e}")))?;
    let b = &report.backfill;
    let reconciled = report.reconcile.as_ref().map_or_else(
        || "no reconcile needed after a first backfill".to_owned(),
        |r| {
            format!(
                "reconcile {} created, {} updated, {} deleted, {} kept in {:.1}s",
                r.created, r.updated, r.deleted, r.kept, r.seconds
            )
        },
    );
    eprintln!(
        "synced: backfill {} directories ({} resumed), {} users, {} groups, {} memberships, {} AuthKit users, {} organization memberships in {:.1}s; {reconciled}",
        b.directories,
        b.resumed,
        b.users,
        b.groups,
        b.memberships,
        b.authkit_users,
        b.org_memberships,
        b.seconds,
    );
    Ok(())
}

fn migrate(data: &Path) -> Result<(), CliError> {
    let done = crate::ingest::migrate::migrate(data).map_err(|e| match e {
        crate::ingest::migrate::MigrateError::Store(e) => held_elsewhere(e),
        e => CliError::Other(e.to_string()),
    })?;
    let (tombstones, seen, held) = done.bookkeeping;
    eprintln!(
        "migrated {} from schema {} to {}: {} directories, {} users, {} groups; {} tombstones, {} seen event ids, {} held events carried over; the old file is kept as {}",
        data.display(),
        done.from_schema,
        crate::store::SCHEMA_VERSION,
        done.directories,
        done.users,
        done.groups,
        tombstones,
        seen,
        held,
        done.kept.display()
    );
    Ok(())
}

fn compact(data: &Path) -> Result<(), CliError> {
    let done = crate::store::compact(data).map_err(held_elsewhere)?;
    eprintln!(
        "compacted {}: {} MB -> {} MB",
        data.display(),
        done.bytes_before / 1_000_000,
        done.bytes_after / 1_000_000
    );
    Ok(())
}

fn export(data: &Path, args: &ExportArgs) -> Result<(), CliError> {
    if !data.exists() {
        return Err(CliError::Other(format!(
            "no database at {}",
            data.display()
        )));
    }
    if let Some(server) = running_server(data)? {
        return export_from_server(server, args);
    }
    let store = open_without_server(data)?;
    let progress = bar(0, "{spinner} {pos} lines written");
    let report = match &args.file {
        Some(path) => {
            let file = File::create(path)
                .map_err(|e| CliError::Other(format!("cannot create {}: {e}", path.display())))?;
            ndjson::export(&store, &mut BufWriter::with_capacity(1 << 20, file), |n| {
                progress.set_position(n)
            })
        }
        None => {
            let stdout = std::io::stdout();
            ndjson::export(
                &store,
                &mut BufWriter::with_capacity(1 << 20, stdout.lock()),
                |n| progress.set_position(n),
            )
        }
    };
    progress.finish_and_clear();
    print_exported(&report?);
    Ok(())
}

fn print_exported(report: &ndjson::ExportReport) {
    eprintln!(
        "exported {} directories, {} users, {} groups, {} memberships, {} AuthKit users, {} organization memberships",
        report.directories,
        report.users,
        report.groups,
        report.memberships,
        report.authkit_users,
        report.org_memberships
    );
    if report.scim_directories_skipped > 0 {
        eprintln!(
            "left out {} SCIM directories: NDJSON carries WorkOS data; `rollcall backup` copies them",
            report.scim_directories_skipped
        );
    }
}

/// A running server's control socket, when a server holds the database.
#[cfg(unix)]
fn running_server(data: &Path) -> Result<Option<crate::control::Server>, CliError> {
    crate::control::connect(data).map_err(CliError::Other)
}

#[cfg(not(unix))]
fn running_server(_data: &Path) -> Result<Option<std::convert::Infallible>, CliError> {
    Ok(None)
}

#[cfg(unix)]
fn export_from_server(server: crate::control::Server, args: &ExportArgs) -> Result<(), CliError> {
    let progress = bar(0, "{spinner} {pos} lines written");
    let report = match &args.file {
        Some(path) => {
            let file = File::create(path)
                .map_err(|e| CliError::Other(format!("cannot create {}: {e}", path.display())))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            crate::control::request_export(server, &mut out, |n| progress.set_position(n)).and_then(
                |r| {
                    std::io::Write::flush(&mut out)
                        .map(|()| r)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))
                },
            )
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
            crate::control::request_export(server, &mut out, |n| progress.set_position(n)).and_then(
                |r| {
                    std::io::Write::flush(&mut out)
                        .map(|()| r)
                        .map_err(|e| format!("cannot write the export: {e}"))
                },
            )
        }
    };
    progress.finish_and_clear();
    print_exported(&report.map_err(CliError::Other)?);
    Ok(())
}

#[cfg(not(unix))]
fn export_from_server(server: std::convert::Infallible, _: &ExportArgs) -> Result<(), CliError> {
    match server {}
}

fn print_checked(verb: &str, file: &Path, checked: &crate::store::backup::Checked, secs: f64) {
    eprintln!(
        "{verb} {} in {secs:.1}s: {} directories, {} users, {} groups, {} MB; checked (every page, schema {}, every table's entries, every directory's counts)",
        file.display(),
        checked.directories,
        checked.users,
        checked.groups,
        checked.bytes / 1_000_000,
        crate::store::SCHEMA_VERSION,
    );
}

fn backup(data: &Path, args: &BackupArgs) -> Result<(), CliError> {
    let target = std::path::absolute(&args.file)
        .map_err(|e| CliError::Other(format!("cannot resolve {}: {e}", args.file.display())))?;
    let started = std::time::Instant::now();
    let checked = match running_server(data)? {
        #[cfg(unix)]
        Some(server) => crate::control::request_backup(server, &target)
            .map_err(|e| CliError::Other(format!("the backup failed: {e}")))?,
        #[cfg(not(unix))]
        Some(server) => match server {},
        None => {
            if !data.exists() {
                return Err(CliError::Other(format!(
                    "no database at {}",
                    data.display()
                )));
            }
            let store = open_without_server(data)?;
            crate::store::backup::backup(
                &store,
                &target,
                &std::sync::atomic::AtomicBool::new(false),
            )
            .map_err(|e| CliError::Other(format!("the backup failed: {e}")))?
        }
    };
    print_checked(
        "backed up to",
        &target,
        &checked,
        started.elapsed().as_secs_f64(),
    );
    Ok(())
}

fn directory(data: &Path, command: &DirectoryCommand) -> Result<(), CliError> {
    use crate::scim::admin::{self, DirectoryOp};
    let (op, output) = match command {
        DirectoryCommand::Create(a) => (
            DirectoryOp::Create {
                organization_id: a.org.clone(),
                name: a.name.clone(),
                provider: a.provider.clone(),
            },
            &a.output,
        ),
        DirectoryCommand::List(a) => (DirectoryOp::List, &a.output),
        DirectoryCommand::Delete(a) => (DirectoryOp::Delete { id: a.id.clone() }, &a.output),
        DirectoryCommand::RotateToken(a) => {
            (DirectoryOp::RotateToken { id: a.id.clone() }, &a.output)
        }
    };
    // Before anything is done: a directory made while its URL cannot be
    // printed would have a token nobody saw.
    if let Some(url) = output.public.normalized() {
        config::check_public_url(&url).map_err(|e| CliError::Other(e.to_string()))?;
    }
    let result = match running_server(data)? {
        #[cfg(unix)]
        Some(server) => crate::control::request_directory(server, &op).map_err(CliError::Other)?,
        #[cfg(not(unix))]
        Some(server) => match server {},
        None => {
            if matches!(op, DirectoryOp::Create { .. }) {
                check_data_folder(
                    data,
                    false,
                    "create it first (or start the server with --create)",
                )?;
            } else if !data.exists() {
                return Err(CliError::Other(format!(
                    "no database at {}",
                    data.display()
                )));
            }
            let store = open_without_server(data)?;
            admin::run_offline(&store, &op).map_err(CliError::Other)?
        }
    };
    let base = config::public_url(
        output.public.normalized().as_deref(),
        output.listen,
        output.tls_cert.is_some(),
    );
    let scim_url =
        |id: &serde_json::Value| format!("{base}/scim/v2/{}", id.as_str().unwrap_or_default());
    match &op {
        DirectoryOp::Create { .. } | DirectoryOp::RotateToken { .. } => {
            let url = scim_url(&result["id"]);
            let token = result["token"].as_str().unwrap_or_default();
            if output.json {
                println!(
                    "{}",
                    serde_json::json!({"id": result["id"], "scim_url": url, "token": token})
                );
            } else {
                println!(
                    "directory:  {} ({}, {})",
                    result["id"].as_str().unwrap_or_default(),
                    result["type"].as_str().unwrap_or_default(),
                    result["organization_id"].as_str().unwrap_or_default()
                );
                println!("SCIM URL:   {url}");
                println!("token:      {token}");
                eprintln!("The token is shown this once; rollcall keeps only its hash.");
            }
        }
        DirectoryOp::List => {
            if output.json {
                let mut all = result.clone();
                if let Some(list) = all.as_array_mut() {
                    for d in list {
                        d["scim_url"] = serde_json::Value::String(scim_url(&d["id"]));
                    }
                }
                println!("{all}");
            } else {
                for d in result.as_array().into_iter().flatten() {
                    println!(
                        "{}  {}  {}  {:?}  {} users  {} groups  {}",
                        d["id"].as_str().unwrap_or_default(),
                        d["organization_id"].as_str().unwrap_or_default(),
                        d["type"].as_str().unwrap_or_default(),
                        d["name"].as_str().unwrap_or_default(),
                        d["user_count"],
                        d["group_count"],
                        scim_url(&d["id"]),
                    );
                }
            }
        }
        DirectoryOp::Delete { .. } => {
            if output.json {
                println!("{result}");
            } else {
                println!("deleted {}", result["deleted"].as_str().unwrap_or_default());
            }
        }
    }
    Ok(())
}

fn restore(data: &Path, args: &RestoreArgs) -> Result<(), CliError> {
    if running_server(data)?.is_some() {
        return Err(CliError::Other(format!(
            "a server is running on {} (its control socket answers); stop it before restoring",
            data.display()
        )));
    }
    let started = std::time::Instant::now();
    let done = crate::store::backup::restore(data, &args.file).map_err(|e| match e {
        crate::store::backup::BackupError::Store(e) => held_elsewhere(e),
        e => CliError::Other(format!("nothing restored: {e}")),
    })?;
    print_checked(
        &format!("restored {} from", data.display()),
        &args.file,
        &done.checked,
        started.elapsed().as_secs_f64(),
    );
    if let Some(kept) = &done.kept {
        eprintln!("the previous database is kept as {}", kept.display());
    }
    Ok(())
}
