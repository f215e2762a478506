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
    /// Export the database as NDJSON (to stdout without a file).
    Export(ExportArgs),
}

/// How tokens are verified.
#[derive(Args, Debug, Clone, Default)]
pub struct AuthArgs {
    /// JWKS URL (WorkOS: https://api.workos.com/sso/jwks/<client_id>).
    #[arg(long, env = "ROLLCALL_JWKS_URL")]
    pub jwks_url: Option<String>,
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
}

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Run on the embedded default: demo data, dev secrets, a ready curl line.
    #[arg(long)]
    pub dev: bool,
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
    /// WorkOS API key: turns on pull mode (polling the Events API).
    #[arg(long, env = "ROLLCALL_WORKOS_API_KEY", hide_env_values = true)]
    pub workos_api_key: Option<String>,
    /// WorkOS API base URL.
    #[arg(
        long,
        env = "ROLLCALL_WORKOS_API_URL",
        default_value = "https://api.workos.com"
    )]
    pub workos_api_url: String,
    /// Pull mode: seconds between polls once caught up.
    #[arg(long, env = "ROLLCALL_POLL_INTERVAL_SECS", default_value_t = 5)]
    pub poll_interval_secs: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "ROLLCALL_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,
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

/// Pull mode: where and how to poll the WorkOS Events API.
#[derive(Clone, Debug)]
pub struct PullSettings {
    pub api_url: String,
    pub api_key: String,
    pub poll_interval: Duration,
    /// Longest back-off after errors.
    pub max_backoff: Duration,
}

/// Everything the server is built from.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data: PathBuf,
    pub auth: AuthConfig,
    pub webhook_secret: Option<Vec<u8>>,
    pub webhook_tolerance: Duration,
    pub pull: Option<PullSettings>,
    pub max_body_bytes: usize,
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
    /// A streamed list whose client reads nothing for this long is dropped.
    pub stream_stall: Duration,
    /// Event loops serving connections.
    pub workers: usize,
    /// A connection whose pending write makes no progress for this long is
    /// closed.
    pub write_stall: Duration,
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
            pull: None,
            max_body_bytes: 1024 * 1024,
            shutdown_grace: Duration::from_secs(10),
            group_commit_max: 512,
            store: StoreOptions::default(),
            header_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            cache_bytes: 64 * 1024 * 1024,
            stream_threshold: crate::api::lists::DEFAULT_STREAM_THRESHOLD,
            max_streams: 32,
            stream_stall: crate::api::lists::DEFAULT_STREAM_STALL,
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            write_stall: Duration::from_secs(30),
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
        s.pull = args.workos_api_key.as_ref().map(|key| PullSettings {
            api_url: args.workos_api_url.trim_end_matches('/').to_owned(),
            api_key: key.clone(),
            poll_interval: Duration::from_secs(args.poll_interval_secs.max(1)),
            max_backoff: Duration::from_secs(300),
        });
        s.max_body_bytes = args.max_body_bytes;
        s.shutdown_grace = Duration::from_secs(args.shutdown_grace_secs);
        s.group_commit_max = args.group_commit_max;
        s.cache_bytes = args.cache_mb.saturating_mul(1024 * 1024);
        s.stream_threshold = args.stream_threshold;
        s.max_streams = args.max_streams.max(1);
        s.store.check_integrity = args.check_integrity;
        if let Some(n) = args.workers {
            s.workers = n.max(1);
        }
        s.write_stall = Duration::from_secs(args.write_stall_secs.max(1));
        s
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
        }
    }
}

/// The folder that holds the database (and, in dev mode, the dev secrets).
pub fn data_dir(data: &Path) -> PathBuf {
    match data.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}
