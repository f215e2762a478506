//! Getting data in: WorkOS events (webhooks and the Events API), WorkOS sync
//! (backfill, following the events, reconcile), bulk NDJSON import/export,
//! migrations. Every path goes through [`apply`], the one module that
//! turns WorkOS objects into store writes.

pub mod apply;
pub mod backfill;
pub mod committer;
pub mod migrate;
pub mod ndjson;
pub mod pull;
pub mod reconcile;
pub mod signature;
pub mod sync;
pub mod workos;
pub mod workos_api;
