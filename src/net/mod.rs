//! The connection layer, below warp: what happens to a connection between
//! `accept` and the routes, and what hyper would otherwise decide alone.
//!
//! - [`front::FrontDoor`] is the per-connection service around warp: it
//!   answers request targets warp cannot route (authority and asterisk
//!   forms) with a JSON 400.
//!
//! Nothing here routes, authenticates, reads bodies or touches storage;
//! binding and the event loops themselves are [`crate::app`]'s.

pub mod front;
