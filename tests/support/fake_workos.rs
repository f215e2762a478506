//! A fake WorkOS API for tests and benchmarks of the WorkOS sync (backfill,
//! following the Events API, reconcile): WorkOS-shaped state, the list and
//! get endpoints rollcall reads, the Events API, pagination, WorkOS's
//! published rate limits and injectable faults.
//!
//! It owns only its own state and its own socket; it knows nothing of
//! rollcall. Every shape it serves is checked against the official `workos`
//! Python SDK's models by `tests/python/check_fake_workos.py`, so it cannot
//! drift from what WorkOS sends without CI noticing. Included by the
//! integration tests (`tests/api/main.rs`) and by `examples/fake_workos.rs`;
//! it depends only on crates the package already has.
//!
//! What it does like WorkOS (see the SDK `workos==10.8.0`):
//! - `Authorization: Bearer <api key>` on every request (401 otherwise);
//!   list envelope `{"object":"list","data":[…],"list_metadata":{"before","after"}}`.
//! - `limit` 1–100, default 10 (anything else: 422 `invalid_request_parameters`);
//!   `order` `desc` by default (`asc`, and `normal`: descending with `before`
//!   going to older records); cursors are object ids, compared as ids (ids
//!   sort in creation order, so the id of a record deleted since still works
//!   as a cursor); `list_metadata.after` is null on the last page.
//! - The Events API: oldest first; `events` (comma-joined, required),
//!   `range_start`/`range_end` (RFC 3339 with `Z` only), `after`, `limit`,
//!   `organization_id`; only events of the last 30 days; its
//!   `list_metadata` is `{"after": <id of the page's last event>}`, null on
//!   an empty page.
//! - Directories are `linked`/`unlinked` in `GET /directories` (with one
//!   `domain`) but `active`/`inactive` in `dsync.*` events (with `domains[]`).
//! - 404 `entity_not_found`, 429 `rate_limit_exceeded` with `Retry-After`
//!   (whole seconds) and `retry_after` in the body.
//!
//! What it simplifies: deleting a directory, a user or a group removes what
//! hangs off it (users, groups, memberships) without further events, like
//! `dsync.deleted` does; `groups` (deprecated) is not rendered on directory
//! users; the `email`/`idp_id` filters of `/directory_users` are refused
//! (422) rather than half-implemented.
#![allow(dead_code)] // each includer uses its own part of it

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

type Response = warp::reply::Response;

/// The Events API's window: older events are no longer listed.
pub const EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Every event type the fake emits.
pub const EVENT_TYPES: [&str; 16] = [
    "dsync.activated",
    "dsync.deleted",
    "dsync.user.created",
    "dsync.user.updated",
    "dsync.user.deleted",
    "dsync.group.created",
    "dsync.group.updated",
    "dsync.group.deleted",
    "dsync.group.user_added",
    "dsync.group.user_removed",
    "user.created",
    "user.updated",
    "user.deleted",
    "organization_membership.created",
    "organization_membership.updated",
    "organization_membership.deleted",
];

// ---------------------------------------------------------------------------
// Options

/// How the fake starts.
#[derive(Clone, Debug)]
pub struct FakeOptions {
    /// Where to listen (`127.0.0.1:0` by default).
    pub listen: SocketAddr,
    /// The one API key accepted.
    pub api_key: String,
    /// Enforce these rate limits (none by default); see [`RateLimits::WORKOS`].
    pub rate_limits: Option<RateLimits>,
    /// Wait this long before answering each request.
    pub latency: Option<Duration>,
    /// `None` (default): the clock follows the wall clock (shifted by
    /// [`FakeWorkos::advance`]); `Some(t)`: frozen at `t`, moved only by
    /// `advance`/`set_now`.
    pub frozen_at: Option<DateTime<Utc>>,
}

impl Default for FakeOptions {
    fn default() -> Self {
        FakeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: "sk_test_fake_workos".into(),
            rate_limits: None,
            latency: None,
            frozen_at: None,
        }
    }
}

/// Request budgets, each over a sliding window; a request over any of them
/// is a 429 with `Retry-After` and is not counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    /// `/directory_users*` requests per second per directory.
    pub directory_users_per_second: usize,
    /// All requests per 60 seconds per API key.
    pub requests_per_minute: usize,
    /// `/user_management/*` reads per 10 seconds.
    pub user_management_per_10_seconds: usize,
}

impl RateLimits {
    /// WorkOS's published limits (docs: reference/rate-limits).
    pub const WORKOS: RateLimits = RateLimits {
        directory_users_per_second: 4,
        requests_per_minute: 6_000,
        user_management_per_10_seconds: 1_000,
    };
}

// ---------------------------------------------------------------------------
// Objects (what the fake holds, as WorkOS shapes them)

/// A directory's state, as WorkOS's events name it. The list/get API
/// renders `Active` as `linked` and `Inactive` as `unlinked`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectoryState {
    Active,
    Inactive,
    Validating,
    InvalidCredentials,
    Deleting,
}

impl DirectoryState {
    /// The name in `GET /directories`.
    pub fn api_name(self) -> &'static str {
        match self {
            DirectoryState::Active => "linked",
            DirectoryState::Inactive => "unlinked",
            DirectoryState::Validating => "validating",
            DirectoryState::InvalidCredentials => "invalid_credentials",
            DirectoryState::Deleting => "deleting",
        }
    }

    /// The name in `dsync.*` events.
    pub fn event_name(self) -> &'static str {
        match self {
            DirectoryState::Active => "active",
            DirectoryState::Inactive => "inactive",
            DirectoryState::Validating => "validating",
            DirectoryState::InvalidCredentials => "invalid_credentials",
            DirectoryState::Deleting => "deleting",
        }
    }
}

/// A WorkOS directory (`directory_…`).
#[derive(Clone, Debug, PartialEq)]
pub struct Directory {
    pub id: String,
    pub organization_id: String,
    pub name: String,
    /// WorkOS `type`: `okta scim v2.0`, `azure scim v2.0`, `gsuite directory`, …
    pub kind: String,
    pub state: DirectoryState,
    pub domains: Vec<String>,
    pub external_key: String,
    pub created_at: String,
    pub updated_at: String,
}

impl Directory {
    /// As `GET /directories` answers it.
    pub fn api_json(&self) -> Value {
        json!({
            "object": "directory", "id": self.id, "organization_id": self.organization_id,
            "external_key": self.external_key, "type": self.kind, "state": self.state.api_name(),
            "name": self.name, "domain": self.domains.first(),
            "created_at": self.created_at, "updated_at": self.updated_at,
        })
    }

    /// As `dsync.activated` carries it.
    pub fn activated_json(&self) -> Value {
        let domains: Vec<Value> = self
            .domains
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let suffix = self.id.strip_prefix("directory_").unwrap_or(&self.id);
                json!({"object": "organization_domain", "id": format!("org_domain_{suffix}{i}"), "domain": d})
            })
            .collect();
        json!({
            "object": "directory", "id": self.id, "organization_id": self.organization_id,
            "type": self.kind, "state": self.state.event_name(), "name": self.name,
            "external_key": self.external_key, "domains": domains,
            "created_at": self.created_at, "updated_at": self.updated_at,
        })
    }

    /// As `dsync.deleted` carries it.
    pub fn deleted_json(&self) -> Value {
        json!({
            "object": "directory", "id": self.id, "organization_id": self.organization_id,
            "type": self.kind, "state": self.state.event_name(), "name": self.name,
            "created_at": self.created_at, "updated_at": self.updated_at,
        })
    }
}

/// A directory user's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UserState {
    Active,
    Inactive,
    Suspended,
}

/// One of a directory user's `emails`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Email {
    pub primary: bool,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

/// A role reference (`{"slug": "member"}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub slug: String,
}

impl Role {
    pub fn member() -> Role {
        Role {
            slug: "member".into(),
        }
    }
}

/// A directory user (`directory_user_…`), serialized exactly as the list
/// API and the `dsync.user.*` events carry it (nulls included).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "object", rename = "directory_user")]
pub struct DirectoryUser {
    pub id: String,
    pub directory_id: String,
    pub organization_id: String,
    pub idp_id: String,
    pub email: Option<String>,
    pub emails: Option<Vec<Email>>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub job_title: Option<String>,
    pub username: Option<String>,
    pub state: UserState,
    pub role: Option<Role>,
    pub custom_attributes: Map<String, Value>,
    pub raw_attributes: Option<Value>,
    pub created_at: String,
    pub updated_at: String,
}

/// A directory group (`directory_group_…`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "object", rename = "directory_group")]
pub struct DirectoryGroup {
    pub id: String,
    pub idp_id: String,
    pub directory_id: String,
    pub organization_id: String,
    pub name: String,
    pub raw_attributes: Option<Value>,
    pub created_at: String,
    pub updated_at: String,
}

/// An AuthKit user (`user_…`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "object", rename = "user")]
pub struct User {
    pub id: String,
    pub email: String,
    pub email_verified: bool,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub profile_picture_url: Option<String>,
    pub external_id: Option<String>,
    pub last_sign_in_at: Option<String>,
    pub metadata: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
}

/// An organization membership's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MembershipStatus {
    Active,
    Pending,
    Inactive,
}

impl MembershipStatus {
    fn name(self) -> &'static str {
        match self {
            MembershipStatus::Active => "active",
            MembershipStatus::Pending => "pending",
            MembershipStatus::Inactive => "inactive",
        }
    }
}

/// An AuthKit organization membership (`om_…`), as the list and get APIs
/// render it (they add the member's `user` object too).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "object", rename = "organization_membership")]
pub struct OrganizationMembership {
    pub id: String,
    pub user_id: String,
    pub organization_id: String,
    pub organization_name: String,
    pub status: MembershipStatus,
    pub role: Role,
    pub roles: Vec<Role>,
    pub custom_attributes: Map<String, Value>,
    pub directory_managed: bool,
    pub created_at: String,
    pub updated_at: String,
}

impl OrganizationMembership {
    /// As `organization_membership.*` events carry it: without the
    /// organization's name, which only the list and get APIs add.
    pub fn event_json(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.remove("organization_name");
        }
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

/// A bulk initial state: `directories` directories, each in its own
/// organization, with users, groups and memberships. Deterministic for a
/// given `seed` (and, with a frozen clock, byte for byte). No events.
#[derive(Clone, Debug)]
pub struct Seed {
    pub seed: u64,
    pub directories: usize,
    pub users_per_directory: usize,
    pub groups_per_directory: usize,
    /// Groups each user is a member of (at most `groups_per_directory`).
    pub groups_per_user: usize,
    /// AuthKit users per directory, with the email of one of its users and an
    /// active membership in its organization.
    pub authkit_users_per_directory: usize,
}

impl Default for Seed {
    fn default() -> Self {
        Seed {
            seed: 1,
            directories: 1,
            users_per_directory: 10,
            groups_per_directory: 2,
            groups_per_user: 1,
            authkit_users_per_directory: 0,
        }
    }
}

/// What [`FakeWorkos::seed`] created.
#[derive(Clone, Debug, Default)]
pub struct Seeded {
    pub organizations: Vec<String>,
    pub directories: Vec<String>,
    pub users: usize,
    pub groups: usize,
    pub group_memberships: usize,
    pub authkit_users: usize,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// When it arrived.
    pub at: Instant,
    pub method: String,
    /// The route's pattern, e.g. `/directory_users` or `/directory_users/{id}`.
    pub route: &'static str,
    pub path: String,
    pub query: String,
    /// The directory a `/directory_users` request was about, when known.
    pub directory: Option<String>,
    /// The status answered; 0 when the connection was dropped instead.
    pub status: u16,
    /// The 429 came from the rate limiter (not from an injected fault).
    pub throttled: bool,
}

// ---------------------------------------------------------------------------
// The handle

/// A running fake WorkOS API. Cheap to share by reference; every method
/// takes `&self`.
pub struct FakeWorkos {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl FakeWorkos {
    /// Binds and serves in the background on the current tokio runtime.
    ///
    /// # Panics
    /// When the address cannot be bound (a test setup error).
    pub async fn start(options: FakeOptions) -> FakeWorkos {
        let listener = TcpListener::bind(options.listen)
            .await
            .expect("the fake WorkOS API binds its address");
        let addr = listener
            .local_addr()
            .expect("a bound socket has an address");
        static INSTANCE: AtomicU64 = AtomicU64::new(0);
        let clock = match options.frozen_at {
            Some(t) => ClockState::Frozen(t.timestamp_millis()),
            None => ClockState::Wall { offset_ms: 0 },
        };
        let shared = Arc::new(Shared {
            api_key: options.api_key.clone(),
            state: Mutex::new(State::new(INSTANCE.fetch_add(1, Ordering::Relaxed))),
            clock: Mutex::new(clock),
            muted: AtomicUsize::new(0),
            control: Mutex::new(Control {
                rate_limits: options.rate_limits,
                latency: options.latency,
                faults: Vec::new(),
                log: Vec::new(),
                windows: HashMap::new(),
            }),
            request_seq: AtomicU64::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, shared.clone(), stopped));
        FakeWorkos {
            shared,
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:<port>` — what an SDK takes as `base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API key every request must carry.
    pub fn api_key(&self) -> &str {
        &self.shared.api_key
    }

    /// Stops accepting and closes every connection.
    pub async fn stop(mut self) {
        self.shutdown();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    // -- clock ---------------------------------------------------------------

    /// The fake's current time (what new timestamps and event ids carry).
    pub fn now(&self) -> DateTime<Utc> {
        millis_to_datetime(self.shared.now_ms())
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        let mut clock = lock(&self.shared.clock);
        match &mut *clock {
            ClockState::Wall { offset_ms } => *offset_ms = offset_ms.saturating_add(by),
            ClockState::Frozen(ms) => *ms = ms.saturating_add(by),
        }
    }

    /// Sets the clock (a wall clock keeps running from there).
    pub fn set_now(&self, at: DateTime<Utc>) {
        let mut clock = lock(&self.shared.clock);
        match &mut *clock {
            ClockState::Wall { offset_ms } => *offset_ms = at.timestamp_millis() - wall_ms(),
            ClockState::Frozen(ms) => *ms = at.timestamp_millis(),
        }
    }

    // -- mutations (each emits the event WorkOS would) ------------------------

    /// Runs `f`; the changes it makes emit no event (a missed webhook, an
    /// event lost to the 30-day window, drift that only reconcile can see).
    /// The switch is the fake's, not the caller's: changes made meanwhile
    /// from another task are silent too.
    pub fn silently<R>(&self, f: impl FnOnce(&FakeWorkos) -> R) -> R {
        struct Unmute<'a>(&'a AtomicUsize);
        impl Drop for Unmute<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.shared.muted.fetch_add(1, Ordering::SeqCst);
        let _unmute = Unmute(&self.shared.muted);
        f(self)
    }

    /// A new organization (`org_…`). Organizations are also created
    /// implicitly, named after their id, when a directory or membership
    /// names an unknown one.
    pub fn create_organization(&self, name: &str) -> String {
        let now = self.shared.now_ms();
        let mut s = self.shared.state();
        let id = s.ids.next("org", now);
        s.orgs.insert(id.clone(), name.to_owned());
        id
    }

    /// A new directory of `organization_id`, `okta scim v2.0`, active (so
    /// `dsync.activated` is emitted), its defaults adjusted by `edit`.
    pub fn create_directory(
        &self,
        organization_id: &str,
        name: &str,
        edit: impl FnOnce(&mut Directory),
    ) -> Directory {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        s.ensure_org(organization_id);
        let id = s.ids.next("directory", now);
        let ts = format_millis(now);
        let mut dir = Directory {
            id: id.clone(),
            organization_id: organization_id.to_owned(),
            name: name.to_owned(),
            kind: "okta scim v2.0".into(),
            state: DirectoryState::Active,
            domains: vec![format!("{}.test", slug(name))],
            external_key: format!("ext_{}", &id[id.len() - 12..]),
            created_at: ts.clone(),
            updated_at: ts,
        };
        edit(&mut dir);
        dir.id = id.clone();
        if dir.state == DirectoryState::Active && emit {
            s.push_event(
                "dsync.activated",
                Some(&dir.organization_id),
                &dir.activated_json(),
                now,
            );
        }
        s.ensure_org(&dir.organization_id);
        s.directories.insert(id.clone(), dir.clone());
        s.users_by_dir.entry(id.clone()).or_default();
        s.groups_by_dir.entry(id).or_default();
        dir
    }

    /// Changes a directory (`updated_at` is set to now); becoming active
    /// emits `dsync.activated`, nothing else does (WorkOS has no
    /// `dsync.updated`). `None` when there is no such directory.
    pub fn update_directory(
        &self,
        id: &str,
        edit: impl FnOnce(&mut Directory),
    ) -> Option<Directory> {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let dir = s.directories.get_mut(id)?;
        let before = dir.state;
        let (keep_id, keep_org, keep_created) = (
            dir.id.clone(),
            dir.organization_id.clone(),
            dir.created_at.clone(),
        );
        edit(dir);
        dir.id = keep_id;
        dir.organization_id = keep_org;
        dir.created_at = keep_created;
        dir.updated_at = format_millis(now);
        let dir = dir.clone();
        if emit && dir.state == DirectoryState::Active && before != DirectoryState::Active {
            s.push_event(
                "dsync.activated",
                Some(&dir.organization_id),
                &dir.activated_json(),
                now,
            );
        }
        Some(dir)
    }

    /// Deletes a directory with its users, groups and group memberships,
    /// emitting only `dsync.deleted` (state `deleting`). `false` when absent.
    pub fn delete_directory(&self, id: &str) -> bool {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let Some(mut dir) = s.directories.remove(id) else {
            return false;
        };
        for user in s.users_by_dir.remove(id).unwrap_or_default().into_keys() {
            s.user_dir.remove(&user);
            s.groups_of.remove(&user);
        }
        for group in s.groups_by_dir.remove(id).unwrap_or_default().into_keys() {
            s.group_dir.remove(&group);
            s.members.remove(&group);
        }
        dir.state = DirectoryState::Deleting;
        dir.updated_at = format_millis(now);
        if emit {
            s.push_event(
                "dsync.deleted",
                Some(&dir.organization_id),
                &dir.deleted_json(),
                now,
            );
        }
        true
    }

    /// A new active user of `directory_id` with `email` (names taken from
    /// it, an IdP id, `emails`, raw attributes), adjusted by `edit`; emits
    /// `dsync.user.created`.
    ///
    /// # Panics
    /// When the directory does not exist (a test setup error).
    pub fn create_user(
        &self,
        directory_id: &str,
        email: &str,
        edit: impl FnOnce(&mut DirectoryUser),
    ) -> DirectoryUser {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let org = s.directory_org(directory_id);
        let id = s.ids.next("directory_user", now);
        let mut user = default_user(&id, directory_id, &org, email, &format_millis(now));
        edit(&mut user);
        user.id = id.clone();
        user.directory_id = directory_id.to_owned();
        let json = to_bytes(&user);
        if emit {
            s.push_event_raw("dsync.user.created", Some(&org), &json, now);
        }
        s.user_dir.insert(id.clone(), directory_id.to_owned());
        s.users_by_dir
            .entry(directory_id.to_owned())
            .or_default()
            .insert(id, json);
        user
    }

    /// Changes a user (`updated_at` set to now); emits `dsync.user.updated`
    /// with `previous_attributes`. `None` when there is no such user.
    pub fn update_user(
        &self,
        id: &str,
        edit: impl FnOnce(&mut DirectoryUser),
    ) -> Option<DirectoryUser> {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let dir = s.user_dir.get(id)?.clone();
        let old = s.users_by_dir.get(&dir)?.get(id)?.clone();
        let mut user: DirectoryUser = serde_json::from_slice(&old).ok()?;
        let keep = (
            user.id.clone(),
            user.directory_id.clone(),
            user.created_at.clone(),
        );
        edit(&mut user);
        (user.id, user.directory_id, user.created_at) = keep;
        user.updated_at = format_millis(now);
        let json = to_bytes(&user);
        if emit {
            let data = with_previous_attributes(&old, &json);
            let org = user.organization_id.clone();
            s.push_event_raw("dsync.user.updated", Some(&org), &data, now);
        }
        s.users_by_dir.get_mut(&dir)?.insert(id.to_owned(), json);
        Some(user)
    }

    /// Deletes a user and its group memberships; emits `dsync.user.deleted`
    /// with the user as last listed. `false` when absent.
    pub fn delete_user(&self, id: &str) -> bool {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let Some(dir) = s.user_dir.remove(id) else {
            return false;
        };
        let json = s
            .users_by_dir
            .get_mut(&dir)
            .and_then(|users| users.remove(id));
        for group in s.groups_of.remove(id).unwrap_or_default() {
            if let Some(members) = s.members.get_mut(&group) {
                members.remove(id);
            }
        }
        if let (true, Some(json)) = (emit, json) {
            let org = s.directory_org(&dir);
            s.push_event_raw("dsync.user.deleted", Some(&org), &json, now);
        }
        true
    }

    /// A new group of `directory_id`; emits `dsync.group.created`.
    ///
    /// # Panics
    /// When the directory does not exist (a test setup error).
    pub fn create_group(
        &self,
        directory_id: &str,
        name: &str,
        edit: impl FnOnce(&mut DirectoryGroup),
    ) -> DirectoryGroup {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let org = s.directory_org(directory_id);
        let id = s.ids.next("directory_group", now);
        let mut group = default_group(&id, directory_id, &org, name, &format_millis(now));
        edit(&mut group);
        group.id = id.clone();
        group.directory_id = directory_id.to_owned();
        let json = to_bytes(&group);
        if emit {
            s.push_event_raw("dsync.group.created", Some(&org), &json, now);
        }
        s.group_dir.insert(id.clone(), directory_id.to_owned());
        s.groups_by_dir
            .entry(directory_id.to_owned())
            .or_default()
            .insert(id, json);
        group
    }

    /// Changes a group; emits `dsync.group.updated` with
    /// `previous_attributes`. `None` when absent.
    pub fn update_group(
        &self,
        id: &str,
        edit: impl FnOnce(&mut DirectoryGroup),
    ) -> Option<DirectoryGroup> {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let dir = s.group_dir.get(id)?.clone();
        let old = s.groups_by_dir.get(&dir)?.get(id)?.clone();
        let mut group: DirectoryGroup = serde_json::from_slice(&old).ok()?;
        let keep = (
            group.id.clone(),
            group.directory_id.clone(),
            group.created_at.clone(),
        );
        edit(&mut group);
        (group.id, group.directory_id, group.created_at) = keep;
        group.updated_at = format_millis(now);
        let json = to_bytes(&group);
        if emit {
            let data = with_previous_attributes(&old, &json);
            let org = group.organization_id.clone();
            s.push_event_raw("dsync.group.updated", Some(&org), &data, now);
        }
        s.groups_by_dir.get_mut(&dir)?.insert(id.to_owned(), json);
        Some(group)
    }

    /// Deletes a group and its memberships; emits `dsync.group.deleted`.
    pub fn delete_group(&self, id: &str) -> bool {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let Some(dir) = s.group_dir.remove(id) else {
            return false;
        };
        let json = s
            .groups_by_dir
            .get_mut(&dir)
            .and_then(|groups| groups.remove(id));
        for user in s.members.remove(id).unwrap_or_default() {
            if let Some(groups) = s.groups_of.get_mut(&user) {
                groups.remove(id);
            }
        }
        if let (true, Some(json)) = (emit, json) {
            let org = s.directory_org(&dir);
            s.push_event_raw("dsync.group.deleted", Some(&org), &json, now);
        }
        true
    }

    /// Adds a user to a group of the same directory; emits
    /// `dsync.group.user_added` (`{directory_id, user, group}`). `false` when
    /// either is absent, they are in different directories, or the user
    /// already is a member.
    pub fn add_member(&self, group_id: &str, user_id: &str) -> bool {
        self.membership_change(group_id, user_id, true)
    }

    /// Removes a user from a group; emits `dsync.group.user_removed`.
    pub fn remove_member(&self, group_id: &str, user_id: &str) -> bool {
        self.membership_change(group_id, user_id, false)
    }

    fn membership_change(&self, group_id: &str, user_id: &str, add: bool) -> bool {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let (Some(gdir), Some(udir)) = (s.group_dir.get(group_id), s.user_dir.get(user_id)) else {
            return false;
        };
        if gdir != udir {
            return false;
        }
        let dir = gdir.clone();
        let changed = if add {
            s.members
                .entry(group_id.to_owned())
                .or_default()
                .insert(user_id.to_owned())
        } else {
            s.members
                .get_mut(group_id)
                .is_some_and(|m| m.remove(user_id))
        };
        if !changed {
            return false;
        }
        if add {
            s.groups_of
                .entry(user_id.to_owned())
                .or_default()
                .insert(group_id.to_owned());
        } else if let Some(groups) = s.groups_of.get_mut(user_id) {
            groups.remove(group_id);
        }
        if emit {
            let user = s
                .users_by_dir
                .get(&dir)
                .and_then(|u| u.get(user_id))
                .cloned();
            let group = s
                .groups_by_dir
                .get(&dir)
                .and_then(|g| g.get(group_id))
                .cloned();
            if let (Some(user), Some(group)) = (user, group) {
                let mut data = Vec::with_capacity(user.len() + group.len() + 80);
                data.extend_from_slice(b"{\"directory_id\":");
                data.extend_from_slice(&json_string(&dir));
                data.extend_from_slice(b",\"user\":");
                data.extend_from_slice(&user);
                data.extend_from_slice(b",\"group\":");
                data.extend_from_slice(&group);
                data.push(b'}');
                let kind = if add {
                    "dsync.group.user_added"
                } else {
                    "dsync.group.user_removed"
                };
                let org = s.directory_org(&dir);
                s.push_event_raw(kind, Some(&org), &data, now);
            }
        }
        true
    }

    /// A new AuthKit user; emits `user.created`.
    pub fn create_authkit_user(&self, email: &str, edit: impl FnOnce(&mut User)) -> User {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let id = s.ids.next("user", now);
        let ts = format_millis(now);
        let (first, last) = names_from_email(email);
        let mut user = User {
            id: id.clone(),
            email: email.to_owned(),
            email_verified: true,
            first_name: first,
            last_name: last,
            profile_picture_url: None,
            external_id: None,
            last_sign_in_at: None,
            metadata: Map::new(),
            created_at: ts.clone(),
            updated_at: ts,
        };
        edit(&mut user);
        user.id = id.clone();
        let json = to_bytes(&user);
        if emit {
            s.push_event_raw("user.created", None, &json, now);
        }
        s.authkit.insert(
            id,
            AuthkitEntry {
                email: user.email.to_lowercase(),
                json,
            },
        );
        user
    }

    /// Changes an AuthKit user; emits `user.updated`.
    pub fn update_authkit_user(&self, id: &str, edit: impl FnOnce(&mut User)) -> Option<User> {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let mut user: User = serde_json::from_slice(&s.authkit.get(id)?.json).ok()?;
        let keep = (user.id.clone(), user.created_at.clone());
        edit(&mut user);
        (user.id, user.created_at) = keep;
        user.updated_at = format_millis(now);
        let json = to_bytes(&user);
        if emit {
            s.push_event_raw("user.updated", None, &json, now);
        }
        s.authkit.insert(
            id.to_owned(),
            AuthkitEntry {
                email: user.email.to_lowercase(),
                json,
            },
        );
        Some(user)
    }

    /// Deletes an AuthKit user and its organization memberships; emits
    /// `user.deleted`.
    pub fn delete_authkit_user(&self, id: &str) -> bool {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let Some(entry) = s.authkit.remove(id) else {
            return false;
        };
        s.memberships.retain(|_, m| m.user_id != id);
        if emit {
            s.push_event_raw("user.deleted", None, &entry.json, now);
        }
        true
    }

    /// A new active `member` membership of an AuthKit user in an
    /// organization; emits `organization_membership.created`.
    ///
    /// # Panics
    /// When the AuthKit user does not exist (a test setup error).
    pub fn create_membership(
        &self,
        user_id: &str,
        organization_id: &str,
        edit: impl FnOnce(&mut OrganizationMembership),
    ) -> OrganizationMembership {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        assert!(
            s.authkit.contains_key(user_id),
            "create_membership: no AuthKit user {user_id}"
        );
        s.ensure_org(organization_id);
        let id = s.ids.next("om", now);
        let ts = format_millis(now);
        let mut m = OrganizationMembership {
            id: id.clone(),
            user_id: user_id.to_owned(),
            organization_id: organization_id.to_owned(),
            organization_name: s.orgs.get(organization_id).cloned().unwrap_or_default(),
            status: MembershipStatus::Active,
            role: Role::member(),
            roles: vec![Role::member()],
            custom_attributes: Map::new(),
            directory_managed: false,
            created_at: ts.clone(),
            updated_at: ts,
        };
        edit(&mut m);
        m.id = id.clone();
        m.user_id = user_id.to_owned();
        if emit {
            s.push_event_raw(
                "organization_membership.created",
                Some(&m.organization_id),
                &m.event_json(),
                now,
            );
        }
        s.memberships.insert(id, m.clone());
        m
    }

    /// Changes a membership (status, role, …); emits
    /// `organization_membership.updated`.
    pub fn update_membership(
        &self,
        id: &str,
        edit: impl FnOnce(&mut OrganizationMembership),
    ) -> Option<OrganizationMembership> {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let m = s.memberships.get_mut(id)?;
        let keep = (
            m.id.clone(),
            m.user_id.clone(),
            m.organization_id.clone(),
            m.created_at.clone(),
        );
        edit(m);
        (m.id, m.user_id, m.organization_id, m.created_at) = keep;
        m.updated_at = format_millis(now);
        let m = m.clone();
        if emit {
            s.push_event_raw(
                "organization_membership.updated",
                Some(&m.organization_id),
                &m.event_json(),
                now,
            );
        }
        Some(m)
    }

    /// Deletes a membership; emits `organization_membership.deleted`.
    pub fn delete_membership(&self, id: &str) -> bool {
        let now = self.shared.now_ms();
        let emit = self.emits();
        let mut s = self.shared.state();
        let Some(m) = s.memberships.remove(id) else {
            return false;
        };
        if emit {
            s.push_event_raw(
                "organization_membership.deleted",
                Some(&m.organization_id),
                &m.event_json(),
                now,
            );
        }
        true
    }

    /// Creates `seed`'s initial state in bulk, without events; the objects
    /// are stamped now. Directories are built in parallel.
    pub fn seed(&self, seed: &Seed) -> Seeded {
        let now = self.shared.now_ms();
        let ts = format_millis(now);
        let per_directory = 2
            + seed.groups_per_directory
            + seed.users_per_directory
            + 2 * seed
                .authkit_users_per_directory
                .min(seed.users_per_directory);
        let blocks: Vec<(usize, IdBlock)> = {
            let mut s = self.shared.state();
            (0..seed.directories)
                .map(|d| (d, s.ids.reserve(now, per_directory as u64)))
                .collect()
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let chunk = blocks.len().div_ceil(threads).max(1);
        let mut built: Vec<SeededDirectory> = Vec::with_capacity(blocks.len());
        let mut blocks = blocks;
        std::thread::scope(|scope| {
            let mut handles = Vec::new();
            while !blocks.is_empty() {
                let rest = blocks.split_off(chunk.min(blocks.len()));
                let mine = std::mem::replace(&mut blocks, rest);
                let ts = &ts;
                handles.push(scope.spawn(move || {
                    mine.into_iter()
                        .map(|(d, ids)| seed_directory(seed, d, ids, ts))
                        .collect::<Vec<_>>()
                }));
            }
            for h in handles {
                built.extend(h.join().expect("a seeding thread does not panic"));
            }
        });

        let mut out = Seeded::default();
        let mut s = self.shared.state();
        for b in built {
            out.users += b.users.len();
            out.groups += b.groups.len();
            out.group_memberships += b.groups_of.values().map(BTreeSet::len).sum::<usize>();
            out.authkit_users += b.authkit.len();
            for id in b.users.keys() {
                s.user_dir.insert(id.clone(), b.directory.id.clone());
            }
            for id in b.groups.keys() {
                s.group_dir.insert(id.clone(), b.directory.id.clone());
            }
            s.users_by_dir.insert(b.directory.id.clone(), b.users);
            s.groups_by_dir.insert(b.directory.id.clone(), b.groups);
            s.members.extend(b.members);
            s.groups_of.extend(b.groups_of);
            s.authkit.extend(b.authkit);
            s.memberships.extend(b.memberships);
            s.orgs
                .insert(b.directory.organization_id.clone(), b.organization_name);
            out.organizations.push(b.directory.organization_id.clone());
            out.directories.push(b.directory.id.clone());
            s.directories.insert(b.directory.id.clone(), b.directory);
        }
        out
    }

    fn emits(&self) -> bool {
        self.shared.muted.load(Ordering::SeqCst) == 0
    }

    // -- reads, for assertions -----------------------------------------------

    pub fn directory(&self, id: &str) -> Option<Directory> {
        self.shared.state().directories.get(id).cloned()
    }

    pub fn directories(&self) -> Vec<Directory> {
        self.shared.state().directories.values().cloned().collect()
    }

    pub fn user(&self, id: &str) -> Option<DirectoryUser> {
        let s = self.shared.state();
        let dir = s.user_dir.get(id)?;
        serde_json::from_slice(s.users_by_dir.get(dir)?.get(id)?).ok()
    }

    /// Ids of a directory's users, in creation order.
    pub fn user_ids(&self, directory_id: &str) -> Vec<String> {
        let s = self.shared.state();
        s.users_by_dir
            .get(directory_id)
            .map(|u| u.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn group(&self, id: &str) -> Option<DirectoryGroup> {
        let s = self.shared.state();
        let dir = s.group_dir.get(id)?;
        serde_json::from_slice(s.groups_by_dir.get(dir)?.get(id)?).ok()
    }

    /// Ids of a directory's groups, in creation order.
    pub fn group_ids(&self, directory_id: &str) -> Vec<String> {
        let s = self.shared.state();
        s.groups_by_dir
            .get(directory_id)
            .map(|g| g.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Ids of a group's members, in creation order of the users.
    pub fn member_ids(&self, group_id: &str) -> Vec<String> {
        let s = self.shared.state();
        s.members
            .get(group_id)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn authkit_user(&self, id: &str) -> Option<User> {
        serde_json::from_slice(&self.shared.state().authkit.get(id)?.json).ok()
    }

    /// Ids of every AuthKit user, in creation order.
    pub fn authkit_user_ids(&self) -> Vec<String> {
        self.shared.state().authkit.keys().cloned().collect()
    }

    pub fn membership(&self, id: &str) -> Option<OrganizationMembership> {
        self.shared.state().memberships.get(id).cloned()
    }

    /// Ids of every organization membership, in creation order.
    pub fn membership_ids(&self) -> Vec<String> {
        self.shared.state().memberships.keys().cloned().collect()
    }

    /// Every event emitted so far, oldest first (the 30-day window ignored).
    pub fn events(&self) -> Vec<Value> {
        self.shared
            .state()
            .events
            .iter()
            .filter_map(|e| serde_json::from_slice(&e.json).ok())
            .collect()
    }

    // -- faults, limits, latency ---------------------------------------------

    /// The next `count` requests whose path starts with `route_prefix` are
    /// answered `status` (429 with `Retry-After: 1`, or 500, 502, 503, …)
    /// before anything else is looked at.
    pub fn fail_next(&self, route_prefix: &str, count: usize, status: u16) {
        self.shared.control().faults.push(Fault {
            prefix: route_prefix.to_owned(),
            left: count,
            action: FaultAction::Status(status),
        });
    }

    /// The next `count` requests whose path starts with `route_prefix` get
    /// no answer at all: the connection is closed.
    pub fn drop_next(&self, route_prefix: &str, count: usize) {
        self.shared.control().faults.push(Fault {
            prefix: route_prefix.to_owned(),
            left: count,
            action: FaultAction::Drop,
        });
    }

    /// Forgets faults not yet triggered.
    pub fn clear_faults(&self) {
        self.shared.control().faults.clear();
    }

    pub fn set_latency(&self, latency: Option<Duration>) {
        self.shared.control().latency = latency;
    }

    pub fn set_rate_limits(&self, limits: Option<RateLimits>) {
        let mut c = self.shared.control();
        c.rate_limits = limits;
        c.windows.clear();
    }

    // -- what the client did -------------------------------------------------

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.control().log.clone()
    }

    /// Requests whose path starts with `route_prefix`.
    pub fn count(&self, route_prefix: &str) -> usize {
        self.shared
            .control()
            .log
            .iter()
            .filter(|r| r.path.starts_with(route_prefix))
            .count()
    }

    /// `/directory_users` requests about `directory_id`.
    pub fn count_for_directory(&self, directory_id: &str) -> usize {
        self.shared
            .control()
            .log
            .iter()
            .filter(|r| r.directory.as_deref() == Some(directory_id))
            .count()
    }

    /// Requests the rate limiter refused (429).
    pub fn throttled(&self) -> usize {
        self.shared
            .control()
            .log
            .iter()
            .filter(|r| r.throttled)
            .count()
    }

    /// The most `/directory_users` requests answered for one directory
    /// within any `window` (what a well-behaved client keeps at or under 4
    /// per second).
    pub fn peak_directory_rate(&self, window: Duration) -> usize {
        let c = self.shared.control();
        let mut by_dir: HashMap<&str, Vec<Instant>> = HashMap::new();
        for r in c.log.iter().filter(|r| !r.throttled && r.status != 0) {
            if let Some(d) = &r.directory {
                by_dir.entry(d).or_default().push(r.at);
            }
        }
        by_dir
            .values()
            .map(|times| {
                let mut peak = 0;
                let mut start = 0;
                for end in 0..times.len() {
                    while times[end].duration_since(times[start]) >= window {
                        start += 1;
                    }
                    peak = peak.max(end - start + 1);
                }
                peak
            })
            .max()
            .unwrap_or(0)
    }

    /// Forgets the request log (and the rate limiter's windows).
    pub fn reset_requests(&self) {
        let mut c = self.shared.control();
        c.log.clear();
        c.windows.clear();
    }
}

impl Drop for FakeWorkos {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---------------------------------------------------------------------------
// Shared state

struct Shared {
    api_key: String,
    state: Mutex<State>,
    clock: Mutex<ClockState>,
    /// > 0 inside `silently`.
    muted: AtomicUsize,
    control: Mutex<Control>,
    request_seq: AtomicU64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        lock(&self.control)
    }

    fn now_ms(&self) -> i64 {
        match *lock(&self.clock) {
            ClockState::Wall { offset_ms } => wall_ms() + offset_ms,
            ClockState::Frozen(ms) => ms,
        }
    }
}

/// A panicking test must not turn every later request into a second panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

enum ClockState {
    Wall { offset_ms: i64 },
    Frozen(i64),
}

struct Control {
    rate_limits: Option<RateLimits>,
    latency: Option<Duration>,
    faults: Vec<Fault>,
    log: Vec<RequestRecord>,
    /// Rate-limit windows: key → arrival times of counted requests.
    windows: HashMap<String, VecDeque<Instant>>,
}

struct Fault {
    prefix: String,
    left: usize,
    action: FaultAction,
}

#[derive(Clone, Copy)]
enum FaultAction {
    Status(u16),
    Drop,
}

struct AuthkitEntry {
    /// Lower-cased, for `?email=`.
    email: String,
    json: Bytes,
}

struct EventRec {
    id: String,
    kind: &'static str,
    organization_id: Option<String>,
    created_ms: i64,
    json: Bytes,
}

/// Everything WorkOS would hold. Users and groups are kept as the JSON the
/// API serves (rendered once per change), so a page is a copy of bytes.
struct State {
    ids: Ids,
    /// Organization id → name.
    orgs: HashMap<String, String>,
    directories: BTreeMap<String, Directory>,
    /// Directory user id → its directory.
    user_dir: HashMap<String, String>,
    /// Directory → its users, by id (= creation order).
    users_by_dir: HashMap<String, BTreeMap<String, Bytes>>,
    group_dir: HashMap<String, String>,
    groups_by_dir: HashMap<String, BTreeMap<String, Bytes>>,
    /// Group → member user ids.
    members: HashMap<String, BTreeSet<String>>,
    /// User → groups it is a member of.
    groups_of: HashMap<String, BTreeSet<String>>,
    authkit: BTreeMap<String, AuthkitEntry>,
    memberships: BTreeMap<String, OrganizationMembership>,
    /// Append-only; ids increase, so sorted by id.
    events: Vec<EventRec>,
}

impl State {
    fn new(instance: u64) -> State {
        State {
            ids: Ids {
                last_ms: 0,
                seq: 0,
                salt: instance & 0xffff,
            },
            orgs: HashMap::new(),
            directories: BTreeMap::new(),
            user_dir: HashMap::new(),
            users_by_dir: HashMap::new(),
            group_dir: HashMap::new(),
            groups_by_dir: HashMap::new(),
            members: HashMap::new(),
            groups_of: HashMap::new(),
            authkit: BTreeMap::new(),
            memberships: BTreeMap::new(),
            events: Vec::new(),
        }
    }

    fn ensure_org(&mut self, id: &str) {
        if !self.orgs.contains_key(id) {
            self.orgs.insert(id.to_owned(), id.to_owned());
        }
    }

    /// # Panics
    /// When the directory does not exist (mutations name only live ones).
    fn directory_org(&self, directory_id: &str) -> String {
        self.directories
            .get(directory_id)
            .map(|d| d.organization_id.clone())
            .unwrap_or_else(|| panic!("no directory {directory_id} in the fake WorkOS"))
    }

    fn push_event(&mut self, kind: &'static str, org: Option<&str>, data: &Value, now: i64) {
        let data = serde_json::to_vec(data).unwrap_or_default();
        self.push_event_raw(kind, org, &data, now);
    }

    fn push_event_raw(&mut self, kind: &'static str, org: Option<&str>, data: &[u8], now: i64) {
        let id = self.ids.next("event", now);
        let mut json = Vec::with_capacity(data.len() + 120);
        json.extend_from_slice(b"{\"object\":\"event\",\"id\":\"");
        json.extend_from_slice(id.as_bytes());
        json.extend_from_slice(b"\",\"event\":\"");
        json.extend_from_slice(kind.as_bytes());
        json.extend_from_slice(b"\",\"data\":");
        json.extend_from_slice(data);
        json.extend_from_slice(b",\"created_at\":\"");
        json.extend_from_slice(format_millis(now).as_bytes());
        json.extend_from_slice(b"\"}");
        self.events.push(EventRec {
            id,
            kind,
            organization_id: org.map(str::to_owned),
            created_ms: now,
            json: Bytes::from(json),
        });
    }
}

/// WorkOS-like ids: `<prefix>_<ULID>`, the ULID's time from the fake's
/// clock (never going back) and a counter, so ids sort in creation order.
struct Ids {
    last_ms: i64,
    seq: u64,
    salt: u64,
}

impl Ids {
    fn next(&mut self, prefix: &str, now_ms: i64) -> String {
        self.reserve(now_ms, 1).next(prefix)
    }

    /// `n` consecutive ids, to be made later (and elsewhere) in order.
    fn reserve(&mut self, now_ms: i64, n: u64) -> IdBlock {
        self.last_ms = self.last_ms.max(now_ms.max(0));
        let block = IdBlock {
            ms: self.last_ms,
            seq: self.seq,
            salt: self.salt,
        };
        self.seq += n;
        block
    }
}

struct IdBlock {
    ms: i64,
    seq: u64,
    salt: u64,
}

impl IdBlock {
    fn next(&mut self, prefix: &str) -> String {
        self.seq += 1;
        let ms = (self.ms as u128) & ((1 << 48) - 1);
        // 80 bits after the time: the counter (ordering within a
        // millisecond), then noise so ids look like WorkOS's.
        let noise = SplitMix(self.seq ^ (self.salt << 48)).next() & 0xff_ffff;
        let value = (ms << 80) | ((self.seq as u128 & ((1 << 56) - 1)) << 24) | noise as u128;
        const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let mut out = String::with_capacity(prefix.len() + 27);
        out.push_str(prefix);
        out.push('_');
        for i in (0..26).rev() {
            out.push(ALPHABET[((value >> (i * 5)) & 31) as usize] as char);
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Pagination

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    Asc,
    Desc,
    /// Descending, with `before` going to older records and `after` to newer.
    Normal,
}

struct Paging {
    limit: usize,
    order: Order,
    before: Option<String>,
    after: Option<String>,
}

/// A sorted set of ids that can be walked from a cursor either way.
trait IdSource {
    /// Ids strictly after `from` ascending (`rev == false`), or strictly
    /// before it descending; from the start or the end without `from`.
    fn walk<'a>(&'a self, from: Option<&str>, rev: bool) -> Box<dyn Iterator<Item = &'a str> + 'a>;
}

impl<V> IdSource for BTreeMap<String, V> {
    fn walk<'a>(&'a self, from: Option<&str>, rev: bool) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        match (from, rev) {
            (None, false) => Box::new(self.keys().map(String::as_str)),
            (None, true) => Box::new(self.keys().rev().map(String::as_str)),
            (Some(x), false) => Box::new(
                self.range::<str, _>((Bound::Excluded(x), Bound::Unbounded))
                    .map(|(k, _)| k.as_str()),
            ),
            (Some(x), true) => Box::new(
                self.range::<str, _>((Bound::Unbounded, Bound::Excluded(x)))
                    .rev()
                    .map(|(k, _)| k.as_str()),
            ),
        }
    }
}

impl IdSource for BTreeSet<String> {
    fn walk<'a>(&'a self, from: Option<&str>, rev: bool) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        match (from, rev) {
            (None, false) => Box::new(self.iter().map(String::as_str)),
            (None, true) => Box::new(self.iter().rev().map(String::as_str)),
            (Some(x), false) => Box::new(
                self.range::<str, _>((Bound::Excluded(x), Bound::Unbounded))
                    .map(String::as_str),
            ),
            (Some(x), true) => Box::new(
                self.range::<str, _>((Bound::Unbounded, Bound::Excluded(x)))
                    .rev()
                    .map(String::as_str),
            ),
        }
    }
}

impl IdSource for Vec<EventRec> {
    fn walk<'a>(&'a self, from: Option<&str>, rev: bool) -> Box<dyn Iterator<Item = &'a str> + 'a> {
        let ids = self.iter().map(|e| e.id.as_str());
        match (from, rev) {
            (None, false) => Box::new(ids),
            (None, true) => Box::new(ids.rev()),
            (Some(x), false) => {
                let start = self.partition_point(|e| e.id.as_str() <= x);
                Box::new(self[start..].iter().map(|e| e.id.as_str()))
            }
            (Some(x), true) => {
                let end = self.partition_point(|e| e.id.as_str() < x);
                Box::new(self[..end].iter().rev().map(|e| e.id.as_str()))
            }
        }
    }
}

struct Page<'a> {
    ids: Vec<&'a str>,
    before: Option<String>,
    after: Option<String>,
}

fn paginate<'a, S: IdSource + ?Sized>(
    src: &'a S,
    keep: &dyn Fn(&str) -> bool,
    p: &Paging,
) -> Page<'a> {
    // Display order: ascending for `asc`, descending otherwise; `forward`
    // walks it from first to last.
    let forward = p.order != Order::Asc;
    let (next, prev) = match p.order {
        Order::Asc | Order::Desc => (p.after.as_deref(), p.before.as_deref()),
        Order::Normal => (p.before.as_deref(), p.after.as_deref()),
    };
    let limit = p.limit;
    let (ids, more_before, more_after) = match (next, prev) {
        (None, Some(x)) => {
            let mut got: Vec<&str> = src
                .walk(Some(x), !forward)
                .filter(|id| keep(id))
                .take(limit + 1)
                .collect();
            let more_before = got.len() > limit;
            got.truncate(limit);
            got.reverse();
            let more_after = got
                .last()
                .is_some_and(|last| src.walk(Some(last), forward).any(keep));
            (got, more_before, more_after)
        }
        (from, _) => {
            let mut got: Vec<&str> = src
                .walk(from, forward)
                .filter(|id| keep(id))
                .take(limit + 1)
                .collect();
            let more_after = got.len() > limit;
            got.truncate(limit);
            let more_before = got
                .first()
                .is_some_and(|first| src.walk(Some(first), !forward).any(keep));
            (got, more_before, more_after)
        }
    };
    let first = ids.first().map(|s| s.to_string());
    let last = ids.last().map(|s| s.to_string());
    let (before, after) = match p.order {
        Order::Asc | Order::Desc => (first.filter(|_| more_before), last.filter(|_| more_after)),
        Order::Normal => (last.filter(|_| more_after), first.filter(|_| more_before)),
    };
    Page { ids, before, after }
}

fn list_body<'b>(
    items: impl Iterator<Item = &'b [u8]>,
    before: Option<&str>,
    after: Option<&str>,
    with_before: bool,
) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 * 1024);
    body.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
    for (i, item) in items.enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"],\"list_metadata\":{");
    if with_before {
        body.extend_from_slice(b"\"before\":");
        body.extend_from_slice(&opt_json_string(before));
        body.push(b',');
    }
    body.extend_from_slice(b"\"after\":");
    body.extend_from_slice(&opt_json_string(after));
    body.extend_from_slice(b"}}");
    body
}

// ---------------------------------------------------------------------------
// HTTP

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for Dropped {}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    // An error here is a client gone or an injected drop.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Dropping the set aborts every connection still open.
}

/// What a request gets.
struct Answer {
    status: u16,
    body: Vec<u8>,
    retry_after: Option<u64>,
    drop: bool,
    throttled: bool,
}

impl Answer {
    fn ok(body: Vec<u8>) -> Answer {
        Answer {
            status: 200,
            body,
            retry_after: None,
            drop: false,
            throttled: false,
        }
    }

    fn error(status: u16, body: Value) -> Answer {
        Answer {
            status,
            body: serde_json::to_vec(&body).unwrap_or_default(),
            retry_after: None,
            drop: false,
            throttled: false,
        }
    }

    fn not_found(what: &str, id: &str) -> Answer {
        Answer::error(
            404,
            json!({"code": "entity_not_found", "message": format!("Could not find {what} '{id}'."), "entity_id": id}),
        )
    }

    fn invalid(field: &str, code: &str, message: &str) -> Answer {
        Answer::error(
            422,
            json!({
                "code": "invalid_request_parameters",
                "message": "Validation failed",
                "errors": [{"code": code, "field": field, "message": message}],
            }),
        )
    }

    fn too_many(retry_after: u64) -> Answer {
        let mut a = Answer::error(
            429,
            json!({"code": "rate_limit_exceeded", "message": "Rate limit exceeded.", "retry_after": retry_after as f64}),
        );
        a.retry_after = Some(retry_after);
        a
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response, Dropped> {
    let at = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    drop(req);
    let latency = shared.control().latency;
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    let route = route_of(&path);
    let (answer, directory) = answer(&shared, &method, &path, route, &query, auth.as_deref(), at);
    shared.control().log.push(RequestRecord {
        at,
        method: method.to_string(),
        route: route.label(),
        path,
        query,
        directory,
        status: if answer.drop { 0 } else { answer.status },
        throttled: answer.throttled,
    });
    if answer.drop {
        return Err(Dropped);
    }
    let request_id = shared.request_seq.fetch_add(1, Ordering::Relaxed) + 1;
    let mut resp = Response::new(Bytes::from(answer.body).into());
    *resp.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("req_fake_{request_id}")) {
        headers.insert("x-request-id", v);
    }
    if let Some(secs) = answer.retry_after
        && let Ok(v) = hyper::header::HeaderValue::from_str(&secs.to_string())
    {
        headers.insert(hyper::header::RETRY_AFTER, v);
    }
    Ok(resp)
}

#[derive(Clone, Copy)]
enum Route<'a> {
    Directories,
    Directory(&'a str),
    DirectoryUsers,
    DirectoryUser(&'a str),
    DirectoryGroups,
    DirectoryGroup(&'a str),
    Users,
    User(&'a str),
    Memberships,
    Membership(&'a str),
    Events,
    Unknown,
}

impl Route<'_> {
    fn label(self) -> &'static str {
        match self {
            Route::Directories => "/directories",
            Route::Directory(_) => "/directories/{id}",
            Route::DirectoryUsers => "/directory_users",
            Route::DirectoryUser(_) => "/directory_users/{id}",
            Route::DirectoryGroups => "/directory_groups",
            Route::DirectoryGroup(_) => "/directory_groups/{id}",
            Route::Users => "/user_management/users",
            Route::User(_) => "/user_management/users/{id}",
            Route::Memberships => "/user_management/organization_memberships",
            Route::Membership(_) => "/user_management/organization_memberships/{id}",
            Route::Events => "/events",
            Route::Unknown => "?",
        }
    }
}

fn route_of(path: &str) -> Route<'_> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segments.as_slice() {
        ["directories"] => Route::Directories,
        ["directories", id] => Route::Directory(id),
        ["directory_users"] => Route::DirectoryUsers,
        ["directory_users", id] => Route::DirectoryUser(id),
        ["directory_groups"] => Route::DirectoryGroups,
        ["directory_groups", id] => Route::DirectoryGroup(id),
        ["user_management", "users"] => Route::Users,
        ["user_management", "users", id] => Route::User(id),
        ["user_management", "organization_memberships"] => Route::Memberships,
        ["user_management", "organization_memberships", id] => Route::Membership(id),
        ["events"] => Route::Events,
        _ => Route::Unknown,
    }
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, comma-separated values split.
    fn list(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name || k.strip_suffix("[]") == Some(name))
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    }

    fn paging(&self, default_order: Order) -> Result<Paging, Answer> {
        let limit = match self.get("limit") {
            None => 10,
            Some(l) => match l.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => n,
                _ => {
                    return Err(Answer::invalid(
                        "limit",
                        "limit_out_of_range",
                        "limit must be an integer between 1 and 100",
                    ));
                }
            },
        };
        let order = match self.get("order") {
            None => default_order,
            Some("asc") => Order::Asc,
            Some("desc") => Order::Desc,
            Some("normal") => Order::Normal,
            Some(_) => {
                return Err(Answer::invalid(
                    "order",
                    "invalid_order",
                    "order must be one of asc, desc, normal",
                ));
            }
        };
        let cursor = |name| self.get(name).filter(|v| !v.is_empty()).map(str::to_owned);
        Ok(Paging {
            limit,
            order,
            before: cursor("before"),
            after: cursor("after"),
        })
    }
}

#[allow(clippy::too_many_arguments)]
fn answer(
    shared: &Shared,
    method: &Method,
    path: &str,
    route: Route<'_>,
    query: &str,
    auth: Option<&str>,
    at: Instant,
) -> (Answer, Option<String>) {
    let query = Query(serde_urlencoded::from_str(query).unwrap_or_default());
    // The directory a `/directory_users` request is about: its rate-limit
    // budget, and what the request log counts it under.
    let directory = {
        let state = shared.state();
        match route {
            Route::DirectoryUsers => query.get("directory").map(str::to_owned).or_else(|| {
                query
                    .get("group")
                    .and_then(|g| state.group_dir.get(g).cloned())
            }),
            Route::DirectoryUser(id) => state.user_dir.get(id).cloned(),
            _ => None,
        }
    };

    // Injected faults come first: they stand for the network and the load
    // balancer, which answer before WorkOS looks at anything.
    let fault = {
        let mut c = shared.control();
        let hit = c
            .faults
            .iter_mut()
            .find(|f| f.left > 0 && path.starts_with(&f.prefix));
        hit.map(|f| {
            f.left -= 1;
            f.action
        })
    };
    match fault {
        Some(FaultAction::Drop) => {
            let mut a = Answer::ok(Vec::new());
            a.drop = true;
            return (a, directory);
        }
        Some(FaultAction::Status(429)) => return (Answer::too_many(1), directory),
        Some(FaultAction::Status(status)) => {
            let message = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Error");
            return (
                Answer::error(status, json!({"message": message})),
                directory,
            );
        }
        None => {}
    }

    let authorized = auth
        .and_then(|a| {
            a.get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bearer "))
                .map(|_| &a[7..])
        })
        .is_some_and(|key| key.trim() == shared.api_key);
    if !authorized {
        return (
            Answer::error(
                401,
                json!({"message": "Could not authorize the request. Maybe your API key is invalid?", "error": "Unauthorized"}),
            ),
            directory,
        );
    }
    if method != Method::GET || matches!(route, Route::Unknown) {
        return (
            Answer::error(404, json!({"message": "Not Found"})),
            directory,
        );
    }
    if let Some(retry_after) = rate_limit(shared, route, directory.as_deref(), at) {
        let mut a = Answer::too_many(retry_after);
        a.throttled = true;
        return (a, directory);
    }
    let state = shared.state();
    let now = shared.now_ms();
    let result = match route {
        Route::Directories => list_directories(&state, &query),
        Route::Directory(id) => match state.directories.get(id) {
            Some(d) => Ok(serde_json::to_vec(&d.api_json()).unwrap_or_default()),
            None => Err(Answer::not_found("directory", id)),
        },
        Route::DirectoryUsers => list_directory_users(&state, &query),
        Route::DirectoryUser(id) => state
            .user_dir
            .get(id)
            .and_then(|d| state.users_by_dir.get(d)?.get(id))
            .map(|b| b.to_vec())
            .ok_or_else(|| Answer::not_found("directory user", id)),
        Route::DirectoryGroups => list_directory_groups(&state, &query),
        Route::DirectoryGroup(id) => state
            .group_dir
            .get(id)
            .and_then(|d| state.groups_by_dir.get(d)?.get(id))
            .map(|b| b.to_vec())
            .ok_or_else(|| Answer::not_found("directory group", id)),
        Route::Users => list_users(&state, &query),
        Route::User(id) => state
            .authkit
            .get(id)
            .map(|e| e.json.to_vec())
            .ok_or_else(|| Answer::not_found("user", id)),
        Route::Memberships => list_memberships(&state, &query),
        Route::Membership(id) => state
            .memberships
            .get(id)
            .and_then(|m| membership_json(&state, m))
            .ok_or_else(|| Answer::not_found("organization membership", id)),
        Route::Events => list_events(&state, &query, now),
        Route::Unknown => Err(Answer::error(404, json!({"message": "Not Found"}))),
    };
    (result.map_or_else(|e| e, Answer::ok), directory)
}

/// `Some(retry_after_secs)` when the request is over a limit; otherwise
/// counts it in every window it belongs to.
fn rate_limit(
    shared: &Shared,
    route: Route<'_>,
    directory: Option<&str>,
    at: Instant,
) -> Option<u64> {
    let mut c = shared.control();
    let limits = c.rate_limits?;
    let mut windows: Vec<(String, usize, Duration)> = vec![(
        format!("key:{}", shared.api_key),
        limits.requests_per_minute,
        Duration::from_secs(60),
    )];
    if let (Route::DirectoryUsers | Route::DirectoryUser(_), Some(d)) = (route, directory) {
        windows.push((
            format!("dir:{d}"),
            limits.directory_users_per_second,
            Duration::from_secs(1),
        ));
    }
    if matches!(
        route,
        Route::Users | Route::User(_) | Route::Memberships | Route::Membership(_)
    ) {
        windows.push((
            "user_management".into(),
            limits.user_management_per_10_seconds,
            Duration::from_secs(10),
        ));
    }
    let mut wait: Option<Duration> = None;
    for (key, limit, window) in &windows {
        let times = c.windows.entry(key.clone()).or_default();
        while times
            .front()
            .is_some_and(|t| at.duration_since(*t) >= *window)
        {
            times.pop_front();
        }
        if times.len() >= *limit {
            let free_at = times.get(times.len() - *limit).map_or(Duration::ZERO, |t| {
                (*t + *window).saturating_duration_since(at)
            });
            wait = Some(wait.map_or(free_at, |w| w.max(free_at)));
        }
    }
    if let Some(wait) = wait {
        // Whole seconds, rounded up: the SDKs read delay-seconds.
        let secs = wait.as_millis().div_ceil(1000).max(1);
        return Some(u64::try_from(secs).unwrap_or(u64::MAX));
    }
    for (key, _, _) in windows {
        c.windows.entry(key).or_default().push_back(at);
    }
    None
}

fn list_directories(s: &State, q: &Query) -> Result<Vec<u8>, Answer> {
    let p = q.paging(Order::Desc)?;
    let org = q.get("organization_id");
    let search = q.get("search").map(str::to_lowercase);
    let keep = |id: &str| {
        s.directories.get(id).is_some_and(|d| {
            org.is_none_or(|o| d.organization_id == o)
                && search
                    .as_deref()
                    .is_none_or(|t| d.name.to_lowercase().contains(t))
        })
    };
    let page = paginate(&s.directories, &keep, &p);
    let rendered: Vec<Vec<u8>> = page
        .ids
        .iter()
        .filter_map(|id| s.directories.get(*id))
        .map(|d| serde_json::to_vec(&d.api_json()).unwrap_or_default())
        .collect();
    Ok(list_body(
        rendered.iter().map(Vec::as_slice),
        page.before.as_deref(),
        page.after.as_deref(),
        true,
    ))
}

fn list_directory_users(s: &State, q: &Query) -> Result<Vec<u8>, Answer> {
    let p = q.paging(Order::Desc)?;
    for unsupported in ["email", "idp_id"] {
        if q.get(unsupported).is_some() {
            return Err(Answer::invalid(
                unsupported,
                "unsupported_by_fake",
                "this filter is not implemented by the fake WorkOS API",
            ));
        }
    }
    let none = BTreeSet::new();
    match (q.get("directory"), q.get("group")) {
        (None, None) => Err(Answer::invalid(
            "directory",
            "directory_or_group_required",
            "directory or group is required",
        )),
        (Some(d), None) => {
            let users = s
                .users_by_dir
                .get(d)
                .ok_or_else(|| Answer::not_found("directory", d))?;
            Ok(render_page(users, &paginate(users, &|_| true, &p)))
        }
        (d, Some(g)) => {
            let (Some(gdir), Some(users)) = (
                s.group_dir.get(g),
                s.group_dir.get(g).and_then(|gd| s.users_by_dir.get(gd)),
            ) else {
                return Err(Answer::not_found("directory group", g));
            };
            let members = if d.is_some_and(|d| d != gdir) {
                &none
            } else {
                s.members.get(g).unwrap_or(&none)
            };
            Ok(render_page(users, &paginate(members, &|_| true, &p)))
        }
    }
}

/// A list page of pre-rendered objects.
fn render_page(objects: &BTreeMap<String, Bytes>, page: &Page<'_>) -> Vec<u8> {
    list_body(
        page.ids
            .iter()
            .filter_map(|id| objects.get(*id))
            .map(|b| b.as_ref()),
        page.before.as_deref(),
        page.after.as_deref(),
        true,
    )
}

fn list_directory_groups(s: &State, q: &Query) -> Result<Vec<u8>, Answer> {
    let p = q.paging(Order::Desc)?;
    let none = BTreeSet::new();
    match (q.get("directory"), q.get("user")) {
        (None, None) => Err(Answer::invalid(
            "directory",
            "directory_or_user_required",
            "directory or user is required",
        )),
        (Some(d), None) => {
            let groups = s
                .groups_by_dir
                .get(d)
                .ok_or_else(|| Answer::not_found("directory", d))?;
            Ok(render_page(groups, &paginate(groups, &|_| true, &p)))
        }
        (d, Some(u)) => {
            let (Some(udir), Some(groups)) = (
                s.user_dir.get(u),
                s.user_dir.get(u).and_then(|ud| s.groups_by_dir.get(ud)),
            ) else {
                return Err(Answer::not_found("directory user", u));
            };
            let of_user = if d.is_some_and(|d| d != udir) {
                &none
            } else {
                s.groups_of.get(u).unwrap_or(&none)
            };
            Ok(render_page(groups, &paginate(of_user, &|_| true, &p)))
        }
    }
}

fn list_users(s: &State, q: &Query) -> Result<Vec<u8>, Answer> {
    let p = q.paging(Order::Desc)?;
    let org = q.get("organization_id").or_else(|| q.get("organization"));
    let members: Option<HashSet<&str>> = org.map(|o| {
        s.memberships
            .values()
            .filter(|m| m.organization_id == o)
            .map(|m| m.user_id.as_str())
            .collect()
    });
    let email = q.get("email").map(str::to_lowercase);
    let keep = |id: &str| {
        members.as_ref().is_none_or(|m| m.contains(id))
            && email
                .as_deref()
                .is_none_or(|e| s.authkit.get(id).is_some_and(|u| u.email == e))
    };
    let page = paginate(&s.authkit, &keep, &p);
    Ok(list_body(
        page.ids
            .iter()
            .filter_map(|id| s.authkit.get(*id))
            .map(|u| u.json.as_ref()),
        page.before.as_deref(),
        page.after.as_deref(),
        true,
    ))
}

fn membership_json(s: &State, m: &OrganizationMembership) -> Option<Vec<u8>> {
    let user = s.authkit.get(&m.user_id)?;
    let mut json = serde_json::to_vec(m).ok()?;
    // `{…}` → `{…,"user":{…}}`: the list and get APIs nest the member.
    json.pop();
    json.extend_from_slice(b",\"user\":");
    json.extend_from_slice(&user.json);
    json.push(b'}');
    Some(json)
}

fn list_memberships(s: &State, q: &Query) -> Result<Vec<u8>, Answer> {
    let p = q.paging(Order::Desc)?;
    let org = q.get("organization_id");
    let user = q.get("user_id");
    if org.is_none() && user.is_none() {
        return Err(Answer::invalid(
            "organization_id",
            "organization_id_or_user_id_required",
            "at least one of user_id or organization_id is required",
        ));
    }
    if let Some(u) = user
        && !s.authkit.contains_key(u)
    {
        return Err(Answer::not_found("user", u));
    }
    let mut statuses = q.list("statuses");
    if statuses.is_empty() {
        statuses.push("active");
    }
    for status in &statuses {
        if !["active", "inactive", "pending"].contains(status) {
            return Err(Answer::invalid(
                "statuses",
                "invalid_status",
                "statuses must be active, inactive or pending",
            ));
        }
    }
    let keep = |id: &str| {
        s.memberships.get(id).is_some_and(|m| {
            org.is_none_or(|o| m.organization_id == o)
                && user.is_none_or(|u| m.user_id == u)
                && statuses.contains(&m.status.name())
        })
    };
    let page = paginate(&s.memberships, &keep, &p);
    let rendered: Vec<Vec<u8>> = page
        .ids
        .iter()
        .filter_map(|id| s.memberships.get(*id))
        .filter_map(|m| membership_json(s, m))
        .collect();
    Ok(list_body(
        rendered.iter().map(Vec::as_slice),
        page.before.as_deref(),
        page.after.as_deref(),
        true,
    ))
}

fn list_events(s: &State, q: &Query, now: i64) -> Result<Vec<u8>, Answer> {
    let p = q.paging(Order::Asc)?;
    let kinds = q.list("events");
    if kinds.is_empty() {
        return Err(Answer::invalid(
            "events",
            "events_required",
            "events is required",
        ));
    }
    let range = |name: &str| -> Result<Option<i64>, Answer> {
        let Some(v) = q.get(name) else {
            return Ok(None);
        };
        let parsed = DateTime::parse_from_rfc3339(v)
            .ok()
            .filter(|_| v.ends_with('Z'));
        match parsed {
            Some(t) => Ok(Some(t.timestamp_millis())),
            None => Err(Answer::invalid(
                name,
                "invalid_date",
                "must be an ISO 8601 UTC timestamp with a Z suffix",
            )),
        }
    };
    let start = range("range_start")?;
    let end = range("range_end")?;
    let oldest = now - EVENT_RETENTION.as_millis() as i64;
    let org = q.get("organization_id");
    let keep = |id: &str| {
        let i = s.events.partition_point(|e| e.id.as_str() < id);
        s.events.get(i).is_some_and(|e| {
            e.created_ms >= oldest
                && kinds.contains(&e.kind)
                && start.is_none_or(|t| e.created_ms >= t)
                && end.is_none_or(|t| e.created_ms < t)
                && org.is_none_or(|o| e.organization_id.as_deref() == Some(o))
        })
    };
    let page = paginate(&s.events, &keep, &p);
    let items: Vec<&[u8]> = page
        .ids
        .iter()
        .filter_map(|id| {
            let i = s.events.partition_point(|e| e.id.as_str() < *id);
            s.events.get(i).map(|e| e.json.as_ref())
        })
        .collect();
    // The Events API's cursor is where the page ends, whether or not more
    // events exist yet; an empty page has none.
    let after = page.ids.last().copied();
    Ok(list_body(items.into_iter(), None, after, false))
}

// ---------------------------------------------------------------------------
// Rendering helpers

fn to_bytes<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn json_string(s: &str) -> Vec<u8> {
    serde_json::to_vec(s).unwrap_or_default()
}

fn opt_json_string(s: Option<&str>) -> Vec<u8> {
    s.map_or_else(|| b"null".to_vec(), json_string)
}

/// `new` with `"previous_attributes"`: the old values of the top-level
/// fields that changed (WorkOS's `*.updated` events carry it).
fn with_previous_attributes(old: &[u8], new: &[u8]) -> Vec<u8> {
    let (Ok(Value::Object(old)), Ok(Value::Object(mut new))) = (
        serde_json::from_slice::<Value>(old),
        serde_json::from_slice::<Value>(new),
    ) else {
        return new.to_vec();
    };
    let previous: Map<String, Value> = old
        .into_iter()
        .filter(|(k, v)| k != "updated_at" && new.get(k) != Some(v))
        .collect();
    new.insert("previous_attributes".into(), Value::Object(previous));
    serde_json::to_vec(&new).unwrap_or_default()
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis_to_datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// WorkOS's form: `2026-01-01T00:00:00.000Z`.
pub fn format_millis(ms: i64) -> String {
    millis_to_datetime(ms)
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

fn names_from_email(email: &str) -> (Option<String>, Option<String>) {
    let local = email.split('@').next().unwrap_or(email);
    let mut parts = local
        .split(['.', '_', '-'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let p: String = p.chars().filter(|c| c.is_alphabetic()).collect();
            let mut chars = p.chars();
            chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .filter(|p| !p.is_empty());
    (parts.next(), parts.next())
}

fn default_user(id: &str, dir: &str, org: &str, email: &str, ts: &str) -> DirectoryUser {
    let (first, last) = names_from_email(email);
    let idp_id = format!("00u{}", &id[id.len() - 10..].to_ascii_lowercase());
    DirectoryUser {
        id: id.to_owned(),
        directory_id: dir.to_owned(),
        organization_id: org.to_owned(),
        idp_id: idp_id.clone(),
        email: Some(email.to_owned()),
        emails: Some(vec![Email {
            primary: true,
            kind: "work".into(),
            value: email.to_owned(),
        }]),
        first_name: first.clone(),
        last_name: last.clone(),
        job_title: None,
        username: Some(email.to_owned()),
        state: UserState::Active,
        role: Some(Role::member()),
        custom_attributes: Map::new(),
        raw_attributes: Some(json!({
            "id": idp_id, "userName": email, "active": true,
            "name": {"givenName": first, "familyName": last},
            "emails": [{"value": email, "type": "work", "primary": true}],
        })),
        created_at: ts.to_owned(),
        updated_at: ts.to_owned(),
    }
}

/// One seeded directory, built away from the state's lock.
struct SeededDirectory {
    directory: Directory,
    organization_name: String,
    users: BTreeMap<String, Bytes>,
    groups: BTreeMap<String, Bytes>,
    members: HashMap<String, BTreeSet<String>>,
    groups_of: HashMap<String, BTreeSet<String>>,
    authkit: Vec<(String, AuthkitEntry)>,
    memberships: Vec<(String, OrganizationMembership)>,
}

/// Directory `d` of `seed`: its content depends only on `seed.seed` and `d`.
fn seed_directory(seed: &Seed, d: usize, mut ids: IdBlock, ts: &str) -> SeededDirectory {
    let mut rng = SplitMix(seed.seed ^ (d as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let org = ids.next("org");
    let organization_name = format!("{} {}", pick(&mut rng, COMPANIES), d + 1);
    let domain = format!("{}.test", slug(&organization_name));
    let dir_id = ids.next("directory");
    let (kind, provider) = pick(&mut rng, PROVIDERS);
    let directory = Directory {
        id: dir_id.clone(),
        organization_id: org.clone(),
        name: format!("{organization_name} {provider}"),
        kind: kind.into(),
        state: DirectoryState::Active,
        domains: vec![domain.clone()],
        external_key: format!("ext_{}", &dir_id[dir_id.len() - 12..]),
        created_at: ts.to_owned(),
        updated_at: ts.to_owned(),
    };

    let mut group_ids = Vec::with_capacity(seed.groups_per_directory);
    let mut groups = Vec::with_capacity(seed.groups_per_directory);
    for g in 0..seed.groups_per_directory {
        let id = ids.next("directory_group");
        let name = format!("{} {}", pick(&mut rng, TEAMS), g + 1);
        groups.push((
            id.clone(),
            to_bytes(&default_group(&id, &dir_id, &org, &name, ts)),
        ));
        group_ids.push(id);
    }

    let per_user = seed.groups_per_user.min(group_ids.len());
    let mut users = Vec::with_capacity(seed.users_per_directory);
    let mut members: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut groups_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    let mut authkit = Vec::new();
    let mut memberships = Vec::new();
    let mut json = Vec::with_capacity(1500);
    for u in 0..seed.users_per_directory {
        let id = ids.next("directory_user");
        let first = pick(&mut rng, FIRST_NAMES);
        let last = pick(&mut rng, LAST_NAMES);
        let email = format!(
            "{}.{}{}@{domain}",
            first.to_ascii_lowercase(),
            slug(last),
            u + 1
        );
        json.clear();
        write_seeded_user(
            &mut json, &id, &dir_id, &org, &email, first, last, &mut rng, ts,
        );
        users.push((id.clone(), Bytes::copy_from_slice(&json)));
        if per_user > 0 {
            let mut mine = BTreeSet::new();
            for j in 0..per_user {
                let group = &group_ids[(u + j) % group_ids.len()];
                members.entry(group.clone()).or_default().insert(id.clone());
                mine.insert(group.clone());
            }
            groups_of.insert(id.clone(), mine);
        }
        if u < seed.authkit_users_per_directory {
            let ak_id = ids.next("user");
            let ak = User {
                id: ak_id.clone(),
                email: email.clone(),
                email_verified: true,
                first_name: Some(first.into()),
                last_name: Some(last.into()),
                profile_picture_url: None,
                external_id: None,
                last_sign_in_at: Some(ts.to_owned()),
                metadata: Map::new(),
                created_at: ts.to_owned(),
                updated_at: ts.to_owned(),
            };
            authkit.push((
                ak_id.clone(),
                AuthkitEntry {
                    email: email.to_lowercase(),
                    json: to_bytes(&ak),
                },
            ));
            let om_id = ids.next("om");
            memberships.push((
                om_id.clone(),
                OrganizationMembership {
                    id: om_id,
                    user_id: ak_id,
                    organization_id: org.clone(),
                    organization_name: organization_name.clone(),
                    status: MembershipStatus::Active,
                    role: Role::member(),
                    roles: vec![Role::member()],
                    custom_attributes: Map::new(),
                    directory_managed: true,
                    created_at: ts.to_owned(),
                    updated_at: ts.to_owned(),
                },
            ));
        }
    }
    SeededDirectory {
        directory,
        organization_name,
        // Built from sorted input: the map is bulk-built, not inserted into.
        users: users.into_iter().collect(),
        groups: groups.into_iter().collect(),
        members,
        groups_of,
        authkit,
        memberships,
    }
}

/// A seeded user's JSON, written directly (fast even in debug builds); it
/// is byte for byte what serde writes for the same [`DirectoryUser`].
#[allow(clippy::too_many_arguments)]
fn write_seeded_user(
    out: &mut Vec<u8>,
    id: &str,
    dir: &str,
    org: &str,
    email: &str,
    first: &str,
    last: &str,
    rng: &mut SplitMix,
    ts: &str,
) {
    let roll = rng.next() % 100;
    let idp_id = format!("00u{:016x}", rng.next());
    let title = pick(rng, TITLES);
    let department = pick(rng, TEAMS);
    let employee_number = (rng.next() % 1_000_000).to_string();
    // 2% suspended, 3% inactive; 1% without a last name.
    let state = match roll {
        0..2 => "suspended",
        2..5 => "inactive",
        _ => "active",
    };
    let last_name = (roll != 99).then_some(last);
    let field = |out: &mut Vec<u8>, key: &str, first: bool| {
        if !first {
            out.push(b',');
        }
        push_json_str(out, key);
        out.push(b':');
    };
    out.push(b'{');
    field(out, "object", true);
    push_json_str(out, "directory_user");
    for (key, value) in [
        ("id", id),
        ("directory_id", dir),
        ("organization_id", org),
        ("idp_id", &idp_id),
        ("email", email),
    ] {
        field(out, key, false);
        push_json_str(out, value);
    }
    field(out, "emails", false);
    out.extend_from_slice(b"[{\"primary\":true,\"type\":\"work\",\"value\":");
    push_json_str(out, email);
    out.extend_from_slice(b"}]");
    field(out, "first_name", false);
    push_json_str(out, first);
    field(out, "last_name", false);
    push_opt_json_str(out, last_name);
    field(out, "job_title", false);
    push_json_str(out, title);
    field(out, "username", false);
    push_json_str(out, email);
    field(out, "state", false);
    push_json_str(out, state);
    field(out, "role", false);
    out.extend_from_slice(b"{\"slug\":\"member\"}");
    field(out, "custom_attributes", false);
    out.extend_from_slice(b"{\"department\":");
    push_json_str(out, department);
    out.extend_from_slice(b",\"job_title\":");
    push_json_str(out, title);
    out.push(b'}');
    field(out, "raw_attributes", false);
    out.extend_from_slice(b"{\"id\":");
    push_json_str(out, &idp_id);
    out.extend_from_slice(b",\"userName\":");
    push_json_str(out, email);
    out.extend_from_slice(if state == "active" {
        b",\"active\":true"
    } else {
        b",\"active\":false"
    });
    out.extend_from_slice(b",\"name\":{\"givenName\":");
    push_json_str(out, first);
    out.extend_from_slice(b",\"familyName\":");
    push_opt_json_str(out, last_name);
    out.extend_from_slice(b",\"formatted\":");
    push_json_str(out, &format!("{first} {last}"));
    out.extend_from_slice(b"},\"title\":");
    push_json_str(out, title);
    out.extend_from_slice(b",\"department\":");
    push_json_str(out, department);
    out.extend_from_slice(b",\"emails\":[{\"value\":");
    push_json_str(out, email);
    out.extend_from_slice(b",\"type\":\"work\",\"primary\":true}]");
    out.extend_from_slice(
        b",\"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User\":{\"department\":",
    );
    push_json_str(out, department);
    out.extend_from_slice(b",\"employeeNumber\":");
    push_json_str(out, &employee_number);
    out.extend_from_slice(b"}}");
    field(out, "created_at", false);
    push_json_str(out, ts);
    field(out, "updated_at", false);
    push_json_str(out, ts);
    out.push(b'}');
}

/// A JSON string literal, escaped as serde_json escapes it.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..0x20 => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn push_opt_json_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_json_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn default_group(id: &str, dir: &str, org: &str, name: &str, ts: &str) -> DirectoryGroup {
    let idp_id = format!("00g{}", &id[id.len() - 10..].to_ascii_lowercase());
    DirectoryGroup {
        id: id.to_owned(),
        idp_id: idp_id.clone(),
        directory_id: dir.to_owned(),
        organization_id: org.to_owned(),
        name: name.to_owned(),
        raw_attributes: Some(json!({"id": idp_id, "displayName": name})),
        created_at: ts.to_owned(),
        updated_at: ts.to_owned(),
    }
}

fn slug(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// A tiny deterministic generator (SplitMix64): the seed's content must not
/// depend on a crate's algorithm choices.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn pick<T: Copy>(rng: &mut SplitMix, from: &[T]) -> T {
    from[(rng.next() % from.len() as u64) as usize]
}

const FIRST_NAMES: &[&str] = &[
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Frances",
    "Dennis",
    "Radia",
    "Linus",
    "Hedy",
    "Tim",
    "Katherine",
    "John",
    "Sophie",
    "Niklaus",
    "Shafi",
    "Leslie",
];
const LAST_NAMES: &[&str] = &[
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Hamilton",
    "Thompson",
    "Allen",
    "Ritchie",
    "Perlman",
    "Torvalds",
    "Lamarr",
    "Berners-Lee",
    "Johnson",
    "McCarthy",
    "Wilson",
    "Wirth",
    "Goldwasser",
    "Lamport",
];
const TITLES: &[&str] = &[
    "Engineer",
    "Senior Engineer",
    "Designer",
    "Product Manager",
    "Analyst",
    "Accountant",
    "Recruiter",
    "Support Specialist",
    "Sales Executive",
    "Director",
];
const TEAMS: &[&str] = &[
    "Engineering",
    "Design",
    "Product",
    "Finance",
    "People",
    "Support",
    "Sales",
    "Marketing",
    "Legal",
    "Operations",
];
const COMPANIES: &[&str] = &[
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell",
];
const PROVIDERS: &[(&str, &str)] = &[
    ("okta scim v2.0", "Okta"),
    ("azure scim v2.0", "Entra ID"),
    ("gsuite directory", "Google Workspace"),
    ("generic scim v2.0", "SCIM"),
    ("onelogin scim v2.0", "OneLogin"),
];
