//! Configuration: one source of truth for every setting, its default and its
//! `ROLLCALL_*` variable (flags win over variables, variables over defaults).
//!
//! The command line is parsed here with clap; [`Settings`] is what the
//! server is built from (tests construct it directly).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::AuthConfig;
use crate::ingest::sync::SyncSettings;
use crate::ingest::workos_api::ApiSettings;
use crate::store::StoreOptions;

/// rollcall: a single-binary directory server answering the Char Directories API.
#[derive(Parser, Debug)]
#[command(name = "rollcall", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// The database file (created on first start).
    #[arg(
        long,
        env = "ROLLCALL_DATA",
        default_value = "./data/rollcall.redb",
        global = true
    )]
    pub data: PathBuf,
    /// Log format.
    #[arg(
        long,
        env = "ROLLCALL_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Mint an HS256 token with the configured (or dev) secret.
    Token(TokenArgs),
    /// Import an NDJSON file (all or nothing; idempotent).
    Import(ImportArgs),
    /// Export the database as NDJSON (to stdout without a file); through a
    /// running server's control socket when one holds the database.
    Export(ExportArgs),
    /// Write a consistent copy of the whole database to FILE, while the
    /// server runs (through its control socket) or not.
    Backup(BackupArgs),
    /// Put a backup in place of the database (server stopped); the
    /// previous file is kept as `<data>.before-restore`.
    Restore(RestoreArgs),
    /// Give the space of freed pages back to the file system (server stopped).
    Compact,
    /// Rebuild a database of an older schema into the current one (server
    /// stopped; the old file is kept beside it).
    Migrate,
    /// Copy a WorkOS account (backfill) and reconcile it once, then stop
    /// (server stopped).
    Sync(WorkosArgs),
    /// Ask the server on this machine whether it is ready (`GET /readyz`);
    /// exit status 0 when it is. For a container's HEALTHCHECK.
    Healthcheck(HealthcheckArgs),
    /// Directories fed by SCIM straight from an identity provider: create,
    /// list, delete, rotate-token (while the server runs, or not).
    #[command(subcommand)]
    Directory(DirectoryCommand),
}

#[derive(Subcommand, Debug, Clone)]
pub enum DirectoryCommand {
    /// Create a SCIM directory; prints its SCIM base URL and bearer token
    /// (shown this once; only its hash is kept).
    Create(DirectoryCreateArgs),
    /// List the SCIM directories (never their tokens).
    List(DirectoryListArgs),
    /// Delete a SCIM directory with all of its users and groups.
    Delete(DirectoryIdArgs),
    /// Give a SCIM directory a new token; the old one stops working at once.
    RotateToken(DirectoryIdArgs),
}

/// What every `rollcall directory` subcommand may print a URL with.
#[derive(Args, Debug, Clone)]
pub struct DirectoryOutputArgs {
    /// Print exactly one JSON value on stdout (for scripts).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub public: PublicUrlArgs,
    /// The server's listen address, for the default public URL.
    #[arg(long, env = "ROLLCALL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The server's certificate (only whether it is set matters: https).
    #[arg(long, env = "ROLLCALL_TLS_CERT", hide = true)]
    pub tls_cert: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct DirectoryCreateArgs {
    /// The organization (`org_…`) whose directory this is.
    #[arg(long)]
    pub org: String,
    /// The directory's name.
    #[arg(long)]
    pub name: String,
    /// The identity provider (sets the Char `type`): okta, entra,
    /// onelogin, jumpcloud or generic.
    #[arg(long, default_value = "generic")]
    pub provider: String,
    #[command(flatten)]
    pub output: DirectoryOutputArgs,
}

#[derive(Args, Debug, Clone)]
pub struct DirectoryListArgs {
    #[command(flatten)]
    pub output: DirectoryOutputArgs,
}

#[derive(Args, Debug, Clone)]
pub struct DirectoryIdArgs {
    /// The directory's id.
    pub id: String,
    #[command(flatten)]
    pub output: DirectoryOutputArgs,
}

#[derive(Args, Debug, Clone)]
pub struct HealthcheckArgs {
    /// The address the server listens on (an unspecified one, like
    /// 0.0.0.0, is asked on loopback).
    #[arg(long, env = "ROLLCALL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Set when the server serves HTTPS: the check then speaks TLS.
    #[arg(long, env = "ROLLCALL_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3)]
    pub timeout_secs: u64,
}

/// How to sync with a WorkOS account (`serve` and `sync`).
#[derive(Args, Debug, Clone)]
pub struct WorkosArgs {
    /// WorkOS API key: turns on sync (a backfill from the list APIs, then the
    /// Events API, and periodic reconcile).
    #[arg(long, env = "ROLLCALL_WORKOS_API_KEY", hide_env_values = true)]
    pub workos_api_key: Option<String>,
    /// WorkOS API base URL.
    #[arg(
        long,
        env = "ROLLCALL_WORKOS_API_URL",
        default_value = "https://api.workos.com"
    )]
    pub workos_api_url: String,
    /// Only these organizations' directories, comma-separated `org_…` (all
    /// when unset).
    #[arg(long, env = "ROLLCALL_WORKOS_ORGANIZATIONS", value_delimiter = ',')]
    pub workos_organizations: Vec<String>,
    /// Seconds between reconcile rounds (0 turns reconcile off).
    #[arg(
        long,
        env = "ROLLCALL_RECONCILE_INTERVAL_SECS",
        default_value_t = 21_600
    )]
    pub reconcile_interval_secs: u64,
    /// Seconds between Events API polls once caught up.
    #[arg(long, env = "ROLLCALL_POLL_INTERVAL_SECS", default_value_t = 5)]
    pub poll_interval_secs: u64,
    /// Most WorkOS API requests per minute (WorkOS's limit per key: 6,000;
    /// 0: unlimited, for a proxy or a test double).
    #[arg(
        long,
        env = "ROLLCALL_WORKOS_REQUESTS_PER_MINUTE",
        default_value_t = 6_000
    )]
    pub workos_requests_per_minute: u32,
    /// Most requests per second to `/directory_users` per directory
    /// (WorkOS's limit: 4; 0: unlimited).
    #[arg(
        long,
        env = "ROLLCALL_WORKOS_DIRECTORY_USERS_PER_SECOND",
        default_value_t = 4
    )]
    pub workos_directory_users_per_second: u32,
    /// Directories copied (or reconciled) at once. Each is held to 4
    /// requests/s by WorkOS, so the default, 24, is what WorkOS's 6,000
    /// requests a minute can feed.
    #[arg(long, env = "ROLLCALL_SYNC_CONCURRENCY", default_value_t = 24)]
    pub sync_concurrency: usize,
}

impl WorkosArgs {
    /// The sync settings, when an API key is given.
    pub fn to_settings(&self) -> Option<SyncSettings> {
        let key = self.workos_api_key.as_ref()?;
        Some(SyncSettings {
            api: ApiSettings {
                base_url: self.workos_api_url.trim_end_matches('/').to_owned(),
                api_key: key.clone(),
                requests_per_minute: self.workos_requests_per_minute,
                directory_users_per_second: self.workos_directory_users_per_second,
                max_backoff: Duration::from_secs(300),
            },
            organizations: self
                .workos_organizations
                .iter()
                .map(|o| o.trim().to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            poll_interval: Duration::from_secs(self.poll_interval_secs.max(1)),
            reconcile_interval: (self.reconcile_interval_secs > 0)
                .then(|| Duration::from_secs(self.reconcile_interval_secs)),
            concurrency: self.sync_concurrency.max(1),
        })
    }
}

/// How tokens are verified.
#[derive(Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// JWKS URL (WorkOS: https://api.workos.com/sso/jwks/<client_id>).
    #[arg(long, env = "ROLLCALL_JWKS_URL")]
    pub jwks_url: Option<String>,
    /// Longest time between two fetches of the JWKS URL, in seconds (a
    /// shorter Cache-Control max-age wins; never more often than every 30 s).
    #[arg(long, env = "ROLLCALL_JWKS_REFRESH_SECS", default_value_t = crate::auth::DEFAULT_JWKS_REFRESH_SECS)]
    pub jwks_refresh_secs: u64,
    /// JWKS file, for offline installs.
    #[arg(long, env = "ROLLCALL_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// HS256 shared secret (development and tests).
    #[arg(long, env = "ROLLCALL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Accepted token issuers, comma-separated (any when unset).
    #[arg(long, env = "ROLLCALL_JWT_ISSUER", value_delimiter = ',')]
    pub jwt_issuer: Vec<String>,
    /// Required token audience (not checked when unset).
    #[arg(long, env = "ROLLCALL_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Clock skew tolerated on exp and nbf, in seconds.
    #[arg(long, env = "ROLLCALL_JWT_LEEWAY_SECS", default_value_t = 30)]
    pub jwt_leeway_secs: u64,
    /// Longest token lifetime accepted (exp minus now, beyond the leeway), in seconds.
    #[arg(long, env = "ROLLCALL_JWT_MAX_LIFETIME_SECS", default_value_t = crate::auth::DEFAULT_MAX_LIFETIME_SECS)]
    pub jwt_max_lifetime_secs: u64,
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Run on the embedded default: demo data, dev secrets, a ready curl line.
    #[arg(long)]
    pub dev: bool,
    /// Create the database's folder if it is missing (otherwise a missing
    /// folder is refused as a likely typo; `--dev` always creates it).
    #[arg(long, env = "ROLLCALL_CREATE")]
    pub create: bool,
    /// Address to listen on.
    #[arg(long, env = "ROLLCALL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub auth: AuthArgs,
    /// WorkOS webhook endpoint secret (the webhook route answers 404 without it).
    #[arg(long, env = "ROLLCALL_WORKOS_WEBHOOK_SECRET", hide_env_values = true)]
    pub workos_webhook_secret: Option<String>,
    /// Webhook signature tolerance, in seconds, either side of now.
    #[arg(long, env = "ROLLCALL_WEBHOOK_TOLERANCE_SECS", default_value_t = 180)]
    pub webhook_tolerance_secs: u64,
    #[command(flatten)]
    pub workos: WorkosArgs,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "ROLLCALL_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Seconds a request body may take to arrive (408 beyond).
    #[arg(long, env = "ROLLCALL_BODY_TIMEOUT_SECS", default_value_t = 10)]
    pub body_timeout_secs: u64,
    /// Webhook bodies read at once before their signature is checked (more
    /// are answered 503 with Retry-After).
    #[arg(long, env = "ROLLCALL_MAX_WEBHOOK_BODIES", default_value_t = 256)]
    pub max_webhook_bodies: usize,
    /// Memory those unverified webhook bodies may hold together, in MiB.
    #[arg(long, env = "ROLLCALL_WEBHOOK_BODY_BUDGET_MB", default_value_t = 32)]
    pub webhook_body_budget_mb: usize,
    /// Seconds to drain in-flight requests on shutdown.
    #[arg(long, env = "ROLLCALL_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Most events that share one durable commit (1 turns group commit off).
    #[arg(long, env = "ROLLCALL_GROUP_COMMIT_MAX", default_value_t = 512)]
    pub group_commit_max: usize,
    /// Memory for whole list bodies ready to send, in MiB.
    #[arg(long, env = "ROLLCALL_CACHE_MB", default_value_t = 64)]
    pub cache_mb: usize,
    /// Lists with more records than this are streamed instead of cached.
    #[arg(long, env = "ROLLCALL_STREAM_THRESHOLD", default_value_t = 10_000)]
    pub stream_threshold: u64,
    /// Large lists streamed at once; more wait their turn.
    #[arg(long, env = "ROLLCALL_MAX_STREAMS", default_value_t = 32)]
    pub max_streams: usize,
    /// Of those, the most one organization may hold (default: a quarter).
    #[arg(long, env = "ROLLCALL_MAX_STREAMS_PER_ORG")]
    pub max_streams_per_org: Option<usize>,
    /// Seconds a list request waits for a stream slot before a 503.
    #[arg(long, env = "ROLLCALL_STREAM_WAIT_SECS", default_value_t = 10)]
    pub stream_wait_secs: u64,
    /// Slowest read of a streamed list, in KiB/s averaged over any 10 s
    /// after the first 10 s (0: no minimum).
    #[arg(long, env = "ROLLCALL_MIN_STREAM_RATE_KIB", default_value_t = 128)]
    pub min_stream_rate_kib: u64,
    /// Disk for large list bodies kept in files, in MiB.
    #[arg(long, env = "ROLLCALL_BODY_FILES_MB", default_value_t = 2048)]
    pub body_files_mb: u64,
    /// Memory for uncached answers (filtered lists, pages) being sent, in MiB.
    #[arg(long, env = "ROLLCALL_RENDER_BUDGET_MB", default_value_t = 128)]
    pub render_budget_mb: usize,
    /// Verify every page checksum of the database at start (slow on large
    /// files; for after a crash or suspected damage).
    #[arg(long, env = "ROLLCALL_CHECK_INTEGRITY")]
    pub check_integrity: bool,
    /// Event loops serving connections (default: one per CPU core).
    #[arg(long, env = "ROLLCALL_WORKERS")]
    pub workers: Option<usize>,
    /// A connection whose pending write makes no progress for this many
    /// seconds (a client that stopped reading) is closed.
    #[arg(long, env = "ROLLCALL_WRITE_STALL_SECS", default_value_t = 30)]
    pub write_stall_secs: u64,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key); read
    /// again when it changes and on SIGHUP.
    #[arg(long, env = "ROLLCALL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "ROLLCALL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics at `/metrics` on this address of their own
    /// (e.g. 127.0.0.1:9464; off when unset; never on the API's listener).
    #[arg(long, env = "ROLLCALL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Log one line per request (method, route template, status, bytes,
    /// duration, request id) and answer an `X-Request-Id`.
    #[arg(long, env = "ROLLCALL_ACCESS_LOG")]
    pub access_log: bool,
    #[command(flatten)]
    pub public: PublicUrlArgs,
    /// Largest SCIM request body accepted, in bytes (a PUT of a big group
    /// lists every member).
    #[arg(long, env = "ROLLCALL_MAX_SCIM_BODY_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub max_scim_body_bytes: usize,
}

/// Where clients reach the server, for the URLs it hands out.
#[derive(Args, Debug, Clone, Default)]
pub struct PublicUrlArgs {
    /// The server's URL as clients reach it (SCIM base URLs and resource
    /// `location`s are built from it); default: `http(s)://` and the listen
    /// address.
    #[arg(long, env = "ROLLCALL_PUBLIC_URL")]
    pub public_url: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    /// Organization id (`org_…`) the token is scoped to.
    #[arg(long)]
    pub org: String,
    /// Subject (user id).
    #[arg(long, default_value = "user_dev")]
    pub sub: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,
    /// HS256 secret (default: the dev secret in the data folder).
    #[arg(long, env = "ROLLCALL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ImportArgs {
    /// The NDJSON file to import.
    pub file: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Where to write (stdout when absent).
    pub file: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct BackupArgs {
    /// The backup file to write (replaced atomically if it exists).
    pub file: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The backup file to restore (left as it is).
    pub file: PathBuf,
}

/// Everything the server is built from.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub auth: AuthConfig,
    pub webhook_secret: Option<Vec<u8>>,
    pub webhook_tolerance: Duration,
    /// WorkOS sync, when an API key is given.
    pub sync: Option<SyncSettings>,
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// Webhook bodies read at once before their signature is checked.
    pub max_webhook_bodies: usize,
    /// Bytes those unverified bodies may hold together.
    pub webhook_body_budget: usize,
    pub shutdown_grace: Duration,
    pub group_commit_max: usize,
    pub store: StoreOptions,
    /// Seconds a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Connections served at once; at the cap, the connection idle longest
    /// is closed to make room (more wait in the accept queue only while
    /// every connection is busy).
    pub max_connections: usize,
    /// Bytes of whole list bodies kept ready to send.
    pub cache_bytes: usize,
    pub stream_threshold: u64,
    pub max_streams: usize,
    /// Of those, the most one organization may hold.
    pub max_streams_per_org: usize,
    /// How long a request waits for a stream slot.
    pub stream_wait: Duration,
    /// A streamed list whose client reads nothing for this long is dropped.
    pub stream_stall: Duration,
    /// After this long, a stream read slower than `min_stream_rate` is dropped.
    pub stream_grace: Duration,
    /// Bytes per second (0: no minimum).
    pub min_stream_rate: u64,
    /// Disk for large list bodies kept in files.
    pub body_files_budget: u64,
    /// Memory for uncached answers being sent.
    pub render_budget: usize,
    /// Event loops serving connections.
    pub workers: usize,
    /// A connection whose pending write makes no progress for this long is
    /// closed.
    pub write_stall: Duration,
    /// Serve HTTPS with this certificate chain and key (PEM files).
    pub tls: Option<TlsFiles>,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// One log line per request.
    pub access_log: bool,
    /// `--public-url`, without a trailing slash.
    pub public_url: Option<String>,
    /// Largest SCIM request body.
    pub max_scim_body_bytes: usize,
}

/// The certificate chain and private key of `--tls-cert` / `--tls-key`.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Settings {
    /// Defaults for a database at `data`, listening on an ephemeral loopback
    /// port, with no verification configured.
    pub fn new(data: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data: data.into(),
            auth: AuthConfig {
                leeway: Duration::from_secs(30),
                jwks_refetch_interval: Duration::from_secs(30),
                ..AuthConfig::default()
            },
            webhook_secret: None,
            webhook_tolerance: Duration::from_secs(180),
            sync: None,
            max_body_bytes: 1024 * 1024,
            body_timeout: Duration::from_secs(10),
            max_webhook_bodies: 256,
            webhook_body_budget: 32 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            group_commit_max: 512,
            store: StoreOptions::default(),
            header_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            cache_bytes: 64 * 1024 * 1024,
            stream_threshold: crate::api::lists::DEFAULT_STREAM_THRESHOLD,
            max_streams: 32,
            max_streams_per_org: 8,
            stream_wait: Duration::from_secs(10),
            stream_stall: crate::api::lists::DEFAULT_STREAM_STALL,
            stream_grace: Duration::from_secs(10),
            min_stream_rate: 128 * 1024,
            body_files_budget: 2048 * 1024 * 1024,
            render_budget: 128 * 1024 * 1024,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            write_stall: Duration::from_secs(30),
            tls: None,
            metrics_listen: None,
            access_log: false,
            public_url: None,
            max_scim_body_bytes: 8 * 1024 * 1024,
        }
    }

    /// Settings from `rollcall serve` flags.
    pub fn from_args(data: &Path, args: &ServeArgs) -> Self {
        let mut s = Self::new(data);
        s.listen = args.listen;
        s.auth = args.auth.to_config();
        s.webhook_secret = args
            .workos_webhook_secret
            .as_ref()
            .map(|v| v.as_bytes().to_vec());
        s.webhook_tolerance = Duration::from_secs(args.webhook_tolerance_secs);
        s.sync = args.workos.to_settings();
        s.max_body_bytes = args.max_body_bytes;
        s.body_timeout = Duration::from_secs(args.body_timeout_secs.max(1));
        s.max_webhook_bodies = args.max_webhook_bodies.max(1);
        s.webhook_body_budget = args
            .webhook_body_budget_mb
            .max(1)
            .saturating_mul(1024 * 1024);
        s.shutdown_grace = Duration::from_secs(args.shutdown_grace_secs);
        s.group_commit_max = args.group_commit_max;
        s.cache_bytes = args.cache_mb.saturating_mul(1024 * 1024);
        s.stream_threshold = args.stream_threshold;
        s.max_streams = args.max_streams.max(1);
        s.max_streams_per_org = args
            .max_streams_per_org
            .unwrap_or(s.max_streams / 4)
            .clamp(1, s.max_streams);
        s.stream_wait = Duration::from_secs(args.stream_wait_secs);
        s.min_stream_rate = args.min_stream_rate_kib.saturating_mul(1024);
        s.body_files_budget = args.body_files_mb.saturating_mul(1024 * 1024);
        s.render_budget = args.render_budget_mb.max(1).saturating_mul(1024 * 1024);
        s.store.check_integrity = args.check_integrity;
        if let Some(n) = args.workers {
            s.workers = n.max(1);
        }
        s.write_stall = Duration::from_secs(args.write_stall_secs.max(1));
        if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            s.tls = Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        s.metrics_listen = args.metrics_listen;
        s.access_log = args.access_log;
        s.public_url = args.public.normalized();
        s.max_scim_body_bytes = args.max_scim_body_bytes.max(1024);
        s
    }
}

impl PublicUrlArgs {
    /// The URL without trailing slashes; `None` when unset or empty.
    pub fn normalized(&self) -> Option<String> {
        self.public_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
    }
}

/// The URL clients reach a server at: `public` when set, else built from
/// the address it listens on.
pub fn public_url(public: Option<&str>, listen: SocketAddr, tls: bool) -> String {
    match public {
        Some(url) => url.to_owned(),
        None => format!("{}://{listen}", if tls { "https" } else { "http" }),
    }
}

impl Settings {
    /// The URL clients reach this server at, given the address it is bound
    /// to (see [`public_url`]).
    pub fn public_url(&self, bound: SocketAddr) -> String {
        public_url(self.public_url.as_deref(), bound, self.tls.is_some())
    }

    /// Where large list bodies are kept: a folder beside the database,
    /// named after it (so two databases in one folder never share one).
    pub fn body_files_dir(&self) -> PathBuf {
        let name = self
            .data
            .file_name()
            .map_or_else(|| "rollcall".into(), |n| n.to_string_lossy().into_owned());
        data_dir(&self.data).join(format!("{name}.bodies"))
    }
}

impl AuthArgs {
    pub fn to_config(&self) -> AuthConfig {
        AuthConfig {
            jwks_url: self.jwks_url.clone(),
            jwks_file: self.jwks_file.clone(),
            hs256_secret: self.jwt_secret.as_ref().map(|s| s.as_bytes().to_vec()),
            issuers: self
                .jwt_issuer
                .iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            audience: self.jwt_audience.clone(),
            leeway: Duration::from_secs(self.jwt_leeway_secs),
            jwks_refetch_interval: Duration::from_secs(30),
            jwks_refresh_interval: Duration::from_secs(self.jwks_refresh_secs),
            max_lifetime: Duration::from_secs(self.jwt_max_lifetime_secs),
            ..AuthConfig::default()
        }
    }
}

/// Shortest HS256 secret accepted: a shorter one can be brute-forced from a
/// single token (RFC 7518 §3.2 asks for a key at least as long as the hash).
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// Webhook secrets shorter than this are accepted with a warning: WorkOS
/// generates long random endpoint secrets, so a short one is most likely
/// hand-made or truncated.
pub const WEBHOOK_SECRET_WARN_BYTES: usize = 24;

/// A setting that makes the server unsafe to run: an empty or weak secret,
/// an empty value where one is required. The message names the flag and
/// its variable, because a set-but-empty variable (an `.env` template, an
/// unset compose variable) is the usual cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} (--{flag} / {var}) {problem}")]
pub struct UnsafeSetting {
    pub what: &'static str,
    pub flag: &'static str,
    pub var: &'static str,
    pub problem: String,
}

impl UnsafeSetting {
    fn new(what: &'static str, flag: &'static str, var: &'static str, problem: String) -> Self {
        Self {
            what,
            flag,
            var,
            problem,
        }
    }
}

/// Refuses an HS256 secret that is empty, blank or shorter than
/// [`MIN_HS256_SECRET_BYTES`].
///
/// # Errors
/// An [`UnsafeSetting`] naming `--jwt-secret` / `ROLLCALL_JWT_SECRET`.
pub fn check_hs256_secret(secret: &[u8]) -> Result<(), UnsafeSetting> {
    let unsafe_secret = |problem: String| {
        UnsafeSetting::new(
            "the HS256 secret",
            "jwt-secret",
            "ROLLCALL_JWT_SECRET",
            problem,
        )
    };
    if secret.iter().all(u8::is_ascii_whitespace) {
        return Err(unsafe_secret(
            "is set but empty: unset it, or give a random secret of at least 32 bytes (`openssl rand -hex 32`)".into(),
        ));
    }
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(unsafe_secret(format!(
            "is {} bytes long; at least {MIN_HS256_SECRET_BYTES} are required (`openssl rand -hex 32`)",
            secret.len()
        )));
    }
    Ok(())
}

/// Refuses a public URL identity providers could not use: one without an
/// `http://` or `https://` scheme and a host, or with spaces.
///
/// # Errors
/// An [`UnsafeSetting`] naming `--public-url` / `ROLLCALL_PUBLIC_URL`.
pub fn check_public_url(url: &str) -> Result<(), UnsafeSetting> {
    let rest = ["http://", "https://"].iter().find_map(|scheme| {
        url.get(..scheme.len())
            .filter(|p| p.eq_ignore_ascii_case(scheme))
            .map(|_| &url[scheme.len()..])
    });
    match rest {
        Some(host) if !host.is_empty() && !url.chars().any(char::is_whitespace) => Ok(()),
        _ => Err(UnsafeSetting::new(
            "the public URL",
            "public-url",
            "ROLLCALL_PUBLIC_URL",
            format!(
                "is {url:?}; give the URL clients reach the server at, like https://rollcall.example.com"
            ),
        )),
    }
}

impl Settings {
    /// Checks every security-relevant setting before anything is opened or
    /// bound; returns warnings worth logging.
    ///
    /// # Errors
    /// The first [`UnsafeSetting`]: an empty or weak secret, an empty key,
    /// URL, path or audience.
    pub fn check(&self) -> Result<Vec<String>, UnsafeSetting> {
        let mut warnings = Vec::new();
        let blank = |v: &[u8]| v.iter().all(u8::is_ascii_whitespace);
        let empty = |what, flag, var| {
            UnsafeSetting::new(
                what,
                flag,
                var,
                "is set but empty: unset it or give a value".into(),
            )
        };
        if let Some(secret) = &self.auth.hs256_secret {
            check_hs256_secret(secret)?;
        }
        if let Some(url) = &self.public_url {
            check_public_url(url)?;
        }
        if self
            .auth
            .jwks_url
            .as_deref()
            .is_some_and(|u| blank(u.as_bytes()))
        {
            return Err(empty("the JWKS URL", "jwks-url", "ROLLCALL_JWKS_URL"));
        }
        if self
            .auth
            .jwks_file
            .as_ref()
            .is_some_and(|p| blank(p.as_os_str().as_encoded_bytes()))
        {
            return Err(empty("the JWKS file", "jwks-file", "ROLLCALL_JWKS_FILE"));
        }
        if let Some(tls) = &self.tls {
            if blank(tls.cert.as_os_str().as_encoded_bytes()) {
                return Err(empty(
                    "the TLS certificate",
                    "tls-cert",
                    "ROLLCALL_TLS_CERT",
                ));
            }
            if blank(tls.key.as_os_str().as_encoded_bytes()) {
                return Err(empty("the TLS key", "tls-key", "ROLLCALL_TLS_KEY"));
            }
        }
        if self
            .auth
            .audience
            .as_deref()
            .is_some_and(|a| blank(a.as_bytes()))
        {
            return Err(empty(
                "the token audience",
                "jwt-audience",
                "ROLLCALL_JWT_AUDIENCE",
            ));
        }
        if let Some(secret) = &self.webhook_secret {
            if blank(secret) {
                return Err(empty(
                    "the webhook secret",
                    "workos-webhook-secret",
                    "ROLLCALL_WORKOS_WEBHOOK_SECRET",
                ));
            }
            if secret.len() < WEBHOOK_SECRET_WARN_BYTES {
                warnings.push(format!(
                    "the webhook secret (--workos-webhook-secret / ROLLCALL_WORKOS_WEBHOOK_SECRET) is only {} bytes long; use the secret WorkOS generated for the endpoint",
                    secret.len()
                ));
            }
        }
        if let Some(sync) = &self.sync
            && blank(sync.api.api_key.as_bytes())
        {
            return Err(empty(
                "the WorkOS API key",
                "workos-api-key",
                "ROLLCALL_WORKOS_API_KEY",
            ));
        }
        Ok(warnings)
    }
}

/// The folder that holds the database (and, in dev mode, the dev secrets).
pub fn data_dir(data: &Path) -> PathBuf {
    match data.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}
