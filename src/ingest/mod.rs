//! Getting data in: WorkOS events (webhooks and the Events API), bulk NDJSON
//! import/export. Every path goes through [`apply`], the one module that
//! turns WorkOS objects into store writes.

pub mod apply;
pub mod committer;
pub mod migrate;
pub mod ndjson;
pub mod pull;
pub mod signature;
pub mod workos;
