//! SCIM 2.0 (RFC 7643/7644) service-provider engines, for issue 11.
//!
//! # What is here
//!
//! Two pure, self-contained engines over `serde_json::Value` resources, with
//! no I/O, ready to be called from HTTP handlers:
//!
//! - [`filter`]: the filter language (RFC 7644 §3.4.2.2) — parser to an AST,
//!   renderer, evaluator against a resource, and [`filter::Filter::indexable`]
//!   which recognises the shapes a store can answer from an index
//!   (`userName eq`, `externalId eq`, `emails[type eq "work"].value eq`,
//!   `emails.value eq`, `active eq`); [`filter::Filter::index_plan`] extends
//!   it to `and`/`or` combinations. It also parses PATCH paths
//!   ([`filter::parse_path`]). Input is bounded in length and nesting depth.
//! - [`patch`]: PATCH operations (RFC 7644 §3.5.2) — parsing a PatchOp body as
//!   Okta and Entra send it, and applying all operations atomically, reporting
//!   the group members added and removed.
//!
//! Errors carry the RFC's `scimType` ([`ScimType`]) so a handler can build the
//! SCIM Error response directly.
//!
//! # Decisions a handler relies on
//!
//! - Filters: at most [`filter::MAX_FILTER_LEN`] bytes and
//!   [`filter::MAX_DEPTH`] levels; `and`/`or` are n-ary. Strings compare
//!   case-insensitively except `id` and `externalId`
//!   ([`filter::default_case_exact`]; pass another hook to
//!   [`filter::Filter::matches_with`] once schemas say more). An index plan
//!   gives candidates; always re-check them with `matches`.
//! - PATCH: at most [`patch::MAX_OPERATIONS`] operations; `remove` of
//!   something absent is a no-op (IdPs retry); `replace` through a value
//!   filter matching nothing is `noTarget`, `add` through an `eq` filter
//!   creates the element; `id`/`meta` may be echoed unchanged but not
//!   changed. [`patch::PatchOutcome`]'s member lists are the difference
//!   between `members` before and after, so the resource given to
//!   [`patch::apply`] must carry the group's full `members`.
//!
//! # Still to come (see issue 11)
//!
//! - HTTP: `/scim/v2/{directory_id}/…` routes (`Users`, `Groups`, `.search`,
//!   `ServiceProviderConfig`, `ResourceTypes`, `Schemas`), the SCIM Error body
//!   and `application/scim+json`, ETags / `If-Match`, pagination.
//! - Storage: SCIM-owned directories, tokens stored as hashes, the indexes
//!   behind [`filter::Indexable`], durable group commit, mapping to the Char
//!   record.
//! - CLI: `rollcall directory create|rotate-token|list|delete`.

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
