//! rollcall: the directory users of many organizations in one embedded redb
//! file, served through a Char-compatible Directories API. One binary, no
//! external database, no other service to run.
//!
//! # Layout
//!
//! - [`model`]: directories, users, groups; typed ids; the Char JSON shape.
//! - [`store`]: the only code that touches redb — tables, indexes, codec,
//!   snapshots and write transactions.
//! - [`auth`]: bearer-token verification (JWKS RS256/ES256, dev HS256).
//! - [`api`]: the HTTP surface (warp filters, JSON errors).
//! - [`ingest`]: WorkOS events (webhooks, Events API pull), NDJSON
//!   import/export; [`ingest::apply`] is the one place objects become writes.
//! - [`app`]: building, binding and running the server with graceful shutdown.
//! - [`net`]: the connection layer below warp — what hyper and warp would
//!   otherwise decide alone about a connection.
//! - [`config`], [`cli`], [`dev`]: settings, commands, the dev quickstart.
//! - [`scim`]: SCIM 2.0 — the filter language, the PATCH engine, SCIM
//!   resources as Char records, the discovery documents and `rollcall
//!   directory` (the routes are in [`api::scim`]).
//! - `control`: the operator's Unix socket into a running server (backup,
//!   export, SCIM directory operations).

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
#[cfg(unix)]
pub mod control;
pub mod dev;
pub mod ingest;
pub mod metrics;
pub mod model;
pub mod net;
pub mod scim;
pub mod store;
