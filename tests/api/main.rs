//! One integration-test binary: every test starts the real server on port 0
//! with its own redb file in a temp dir and speaks HTTP to it.

#[path = "../support/fake_workos.rs"]
mod fake_workos;
mod helpers;
mod workos;

mod auth;
mod backup;
mod caching;
mod compression;
mod crash;
mod determinism;
mod directories;
mod errors;
mod exhaustion;
mod fake;
mod faults;
mod fuzz_http;
mod groups;
mod import;
mod indexes;
mod isolation;
mod linking;
mod logs;
mod metrics;
mod pagination;
mod persistence;
mod process;
mod scim;
mod scim_guard;
mod scim_idp;
mod scoping;
mod secrets;
mod sequence;
mod spec;
mod startup;
mod sync;
mod tls;
mod transport;
mod users;
mod webhooks;
