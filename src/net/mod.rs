//! The connection layer, below warp: what happens to a connection between
//! `accept` and the routes, and what hyper would otherwise decide alone.
//!
//! - [`io::ConnIo`] wraps the accepted socket: hyper's own bare error
//!   answers (unparsable heads, heads over the limits) get the JSON error
//!   shape, a write that makes no progress for the stall time ends the
//!   connection, and an error answer is followed by a lingering close so
//!   the client can read it; a file body's placeholders are sent from
//!   their files with `sendfile(2)` ([`sendfile`]).
//! - [`front::FrontDoor`] is the per-connection service around warp: it
//!   answers request targets warp cannot route (authority and asterisk
//!   forms) with a JSON 400, and marks the connection busy or idle.
//! - [`cap::Connections`] is the connection cap: at the cap, the connection
//!   idle longest is asked to close to make room.
//! - [`tls::Tls`] is the optional TLS certificate, reloaded when its files
//!   change or on SIGHUP; [`tls::Stream`] is a connection, plain or TLS.
//! - [`spread::Spread`] keeps the event loops evenly loaded: a loop that
//!   accepts a connection while busier than another hands it over.
//!
//! Nothing here routes, authenticates, reads bodies or touches storage;
//! binding and the event loops themselves are [`crate::app`]'s.

pub mod cap;
pub mod front;
pub mod io;
pub mod sendfile;
pub mod spread;
pub mod tls;
