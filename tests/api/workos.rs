//! Builders for WorkOS-shaped objects and events, as the WorkOS SDKs model
//! them (directory, directory_user, directory_group, user; event envelopes).

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A fresh, unique WorkOS event id.
pub fn event_id() -> String {
    format!("event_01T{:020}", SEQ.fetch_add(1, Ordering::Relaxed))
}

/// A timestamp `secs` after 2026-01-01T00:00:00Z, in WorkOS's RFC 3339 form.
pub fn t(secs: i64) -> String {
    let base = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
    (base + chrono::Duration::seconds(secs))
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn envelope(event: &str, data: Value, at: i64) -> Value {
    json!({"object": "event", "id": event_id(), "event": event, "data": data, "created_at": t(at)})
}

pub fn directory(id: &str, org: &str, name: &str, kind: &str, state: &str, at: i64) -> Value {
    json!({
        "object": "directory", "id": id, "organization_id": org, "name": name,
        "type": kind, "state": state, "external_key": "ext",
        "domains": [{"object": "organization_domain", "id": "org_domain_1", "domain": "acme.test"}],
        "created_at": t(at), "updated_at": t(at)
    })
}

pub fn activated(id: &str, org: &str, at: i64) -> Value {
    envelope(
        "dsync.activated",
        directory(
            id,
            org,
            &format!("Directory {id}"),
            "okta scim v2.0",
            "active",
            at,
        ),
        at,
    )
}

pub fn directory_deleted(id: &str, org: &str, at: i64) -> Value {
    envelope(
        "dsync.deleted",
        directory(
            id,
            org,
            &format!("Directory {id}"),
            "okta scim v2.0",
            "deleting",
            at,
        ),
        at,
    )
}

/// A directory user with every optional field set.
pub fn user(dir: &str, id: &str, email: &str, at: i64) -> Value {
    json!({
        "object": "directory_user", "id": id, "directory_id": dir,
        "organization_id": "org_ignored", "idp_id": format!("idp-{id}"),
        "email": email, "emails": [{"primary": true, "type": "work", "value": email}],
        "first_name": "Ada", "last_name": "Lovelace", "username": email,
        "state": "active",
        "raw_attributes": {"userName": email, "title": "Engineer", "active": true},
        "custom_attributes": {"department": "Engineering"},
        "role": {"slug": "member"},
        "created_at": t(at), "updated_at": t(at)
    })
}

/// A directory user with every optional field absent, null or empty.
pub fn bare_user(dir: &str, id: &str, email: &str, at: i64) -> Value {
    json!({
        "object": "directory_user", "id": id, "directory_id": dir,
        "organization_id": "org_ignored", "idp_id": "", "email": email,
        "first_name": null, "last_name": null, "state": "suspended",
        "custom_attributes": {},
        "created_at": t(at), "updated_at": t(at)
    })
}

pub fn user_event(kind: &str, user: Value, at: i64) -> Value {
    envelope(&format!("dsync.user.{kind}"), user, at)
}

pub fn group(dir: &str, id: &str, name: &str, at: i64) -> Value {
    json!({
        "object": "directory_group", "id": id, "idp_id": format!("idp-{id}"),
        "directory_id": dir, "organization_id": "org_ignored", "name": name,
        "raw_attributes": {"displayName": name},
        "created_at": t(at), "updated_at": t(at)
    })
}

pub fn group_event(kind: &str, group: Value, at: i64) -> Value {
    envelope(&format!("dsync.group.{kind}"), group, at)
}

pub fn member_event(kind: &str, dir: &str, user: Value, group: Value, at: i64) -> Value {
    envelope(
        &format!("dsync.group.{kind}"),
        json!({"directory_id": dir, "user": user, "group": group}),
        at,
    )
}

pub fn authkit_user(id: &str, email: &str, at: i64) -> Value {
    json!({
        "object": "user", "id": id, "email": email, "email_verified": true,
        "first_name": "Ada", "last_name": "Lovelace", "profile_picture_url": null,
        "external_id": null, "last_sign_in_at": null,
        "created_at": t(at), "updated_at": t(at)
    })
}

pub fn authkit_event(kind: &str, user: Value, at: i64) -> Value {
    envelope(&format!("user.{kind}"), user, at)
}

/// Sets `key` of an object to `value` (builder convenience).
pub fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

/// An AuthKit organization membership (`status`: active, pending, inactive).
pub fn org_membership(id: &str, user: &str, org: &str, status: &str, at: i64) -> Value {
    json!({
        "object": "organization_membership", "id": id, "user_id": user,
        "organization_id": org, "role": {"slug": "member"}, "status": status,
        "custom_attributes": {}, "directory_managed": false,
        "created_at": t(at), "updated_at": t(at)
    })
}

pub fn org_membership_event(kind: &str, membership: Value, at: i64) -> Value {
    envelope(&format!("organization_membership.{kind}"), membership, at)
}

/// The AuthKit user `user` as an active member of `org`.
pub fn member_of(user: &str, org: &str, at: i64) -> Value {
    org_membership_event(
        "created",
        org_membership(&format!("om_{user}_{org}"), user, org, "active", at),
        at,
    )
}
