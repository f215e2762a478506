//! SCIM 2.0 (RFC 7643/7644) service-provider engines, for issue 11.
//!
//! # What is here
//!
//! - [`filter`]: the filter language (RFC 7644 §3.4.2.2) — parser to an AST,
//!   renderer, evaluator against a resource, and the shapes a store can
//!   answer from an index ([`filter::Filter::index_plan`]); also PATCH paths
//!   ([`filter::parse_path`]). Input is bounded in length and depth.
//! - [`patch`]: PATCH operations (RFC 7644 §3.5.2) — parsing a PatchOp body as
//!   Okta and Entra send it, and applying all operations atomically, reporting
//!   the group members added and removed.
//! - [`service`]: SCIM resources as Char records, and every SCIM read and
//!   write on the store (writes run inside the committer's transaction).
//! - [`discovery`]: `ServiceProviderConfig`, `ResourceTypes`, `Schemas`.
//! - [`admin`]: `rollcall directory create|list|delete|rotate-token`.
//!
//! The HTTP surface is [`crate::api::scim`]. Errors carry the RFC's
//! `scimType` ([`ScimType`]).
//!
//! # Decisions the layers rely on
//!
//! - Filters: at most [`filter::MAX_FILTER_LEN`] bytes and
//!   [`filter::MAX_DEPTH`] levels; `and`/`or` are n-ary. Strings compare
//!   case-insensitively except `id` and `externalId`
//!   ([`filter::default_case_exact`]). An index plan gives candidates;
//!   they are always re-checked with `matches`.
//! - PATCH: at most [`patch::MAX_OPERATIONS`] operations; `remove` of
//!   something absent is a no-op (IdPs retry); `replace` through a value
//!   filter matching nothing is `noTarget`, `add` through an `eq` filter
//!   creates the element; `id`/`meta` may be echoed unchanged but not
//!   changed. [`patch::PatchOutcome`]'s member lists are the difference
//!   between `members` before and after, so the resource given to
//!   [`patch::apply`] carries the group's full `members`.

pub mod admin;
pub mod discovery;
pub mod filter;
pub mod patch;
pub mod service;

/// The `scimType` error codes of RFC 7644 §3.12 that these engines produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScimType {
    /// The filter syntax was invalid or the filter too long or deep.
    InvalidFilter,
    /// The request body was not a valid PatchOp message.
    InvalidSyntax,
    /// The `path` attribute was invalid or malformed.
    InvalidPath,
    /// The path did not yield a target (or `remove` had no path).
    NoTarget,
    /// A value was not compatible with the attribute or operation.
    InvalidValue,
    /// The operation tried to modify a read-only attribute (`id`, `meta`).
    Mutability,
    /// A value that must be unique (a user's `userName`) is taken.
    Uniqueness,
    /// More results than `maxResults`, or more operations than allowed.
    TooMany,
}

impl ScimType {
    /// The code as written in a SCIM Error body, e.g. `"invalidFilter"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::Mutability => "mutability",
            ScimType::Uniqueness => "uniqueness",
            ScimType::TooMany => "tooMany",
        }
    }
}

impl std::fmt::Display for ScimType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
