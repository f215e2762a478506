//! Property-based tests on every parser at the edge: the signature header,
//! event JSON, NDJSON import lines, path and query parameters, and bearer
//! tokens, and the SCIM filter and PATCH parsers. For arbitrary and for
//! mutated-valid inputs: never a panic, always a clear error naming a field
//! (or a line), and nothing written.
//!
//! Case counts are set per property below (PROPTEST_CASES overrides them).

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use rollcall::api::ApiError;
use rollcall::api::directories::parse_directory_id;
use rollcall::api::lists::{ListKind, ListParams};
use rollcall::auth::{AuthConfig, Verifier};
use rollcall::ingest::ndjson::{self, NdjsonError};
use rollcall::ingest::signature::{WebhookVerifier, sign};
use rollcall::ingest::workos::Event;
use rollcall::scim::{filter, patch};
use rollcall::store::{Store, StoreOptions};
use serde_json::{Value, json};

const NOW_MS: i64 = 1_790_000_000_000;

fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Arbitrary JSON values, nested a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
        prop::sample::select(vec![
            "directory_x",
            "directory_user_1",
            "org_1",
            "user_1",
            "event_1",
            "active",
            "suspended",
            "",
            "2026-01-01T00:00:00Z"
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::hash_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_events() -> Vec<Value> {
    let user = json!({"object": "directory_user", "id": "directory_user_1", "directory_id": "directory_1",
        "email": "a@b.test", "emails": [{"primary": true, "type": "work", "value": "a@b.test"}],
        "first_name": "A", "last_name": null, "state": "active", "idp_id": "x",
        "raw_attributes": {"a": 1}, "custom_attributes": {}, "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z"});
    let group = json!({"object": "directory_group", "id": "directory_group_1", "directory_id": "directory_1",
        "name": "G", "idp_id": "g", "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"});
    let dir = json!({"object": "directory", "id": "directory_1", "organization_id": "org_1", "name": "D",
        "type": "okta scim v2.0", "state": "active", "domains": [{"domain": "b.test"}],
        "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"});
    let ev = |t: &str, data: Value| json!({"id": "event_1", "event": t, "data": data, "created_at": "2026-01-01T00:00:00Z"});
    vec![
        ev("dsync.activated", dir.clone()),
        ev("dsync.deleted", dir),
        ev("dsync.user.created", user.clone()),
        ev("dsync.user.deleted", user.clone()),
        ev("dsync.group.updated", group.clone()),
        ev(
            "dsync.group.user_added",
            json!({"directory_id": "directory_1", "user": user, "group": group}),
        ),
        ev(
            "user.created",
            json!({"object": "user", "id": "user_1", "email": "a@b.test"}),
        ),
    ]
}

/// Replaces the value at a random path of `v` with `with`.
fn mutate(v: &mut Value, path: &[usize], with: Value) {
    match (v, path.split_first()) {
        (Value::Object(map), Some((i, rest))) if !map.is_empty() => {
            let key = map.keys().nth(i % map.len()).cloned().unwrap_or_default();
            if rest.is_empty() {
                map.insert(key, with);
            } else if let Some(child) = map.get_mut(&key) {
                mutate(child, rest, with);
            }
        }
        (Value::Array(items), Some((i, rest))) if !items.is_empty() => {
            let n = items.len();
            mutate(&mut items[i % n], rest, with);
        }
        (slot, _) => *slot = with,
    }
}

proptest! {
    #![proptest_config(cases(4000))]

    #[test]
    fn signature_headers_never_panic_and_never_pass_unless_signed(
        header in prop::collection::vec(any::<u8>(), 0..200),
        body in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let v = WebhookVerifier::new("secret", Duration::from_secs(180));
        prop_assert!(v.verify(Some(&header), &body, NOW_MS).is_err());
    }

    #[test]
    fn structured_signature_headers_pass_only_when_exactly_right(
        t_shift in -400_000i64..400_000,
        spaces in "[ \t]{0,3}",
        extra in prop::option::of("x[a-z0-9]{0,3}=[a-z0-9]{0,8}"),
        flip in prop::option::of(0usize..64),
        body in ".{0,64}",
    ) {
        let v = WebhookVerifier::new("secret", Duration::from_secs(180));
        let t = NOW_MS + t_shift;
        let good = sign(b"secret", body.as_bytes(), t);
        let (t_part, v1) = good.split_once(", ").unwrap();
        let mut v1 = v1.to_owned();
        if let Some(i) = flip {
            let pos = 3 + i % 64;
            let c = if &v1[pos..=pos] == "0" { "1" } else { "0" };
            v1.replace_range(pos..=pos, c);
        }
        let header = match &extra {
            Some(e) => format!("{spaces}{t_part}{spaces},{spaces}{v1},{e}"),
            None => format!("{spaces}{t_part}{spaces},{spaces}{v1}{spaces}"),
        };
        let ok = v.verify(Some(header.as_bytes()), body.as_bytes(), NOW_MS).is_ok();
        prop_assert_eq!(ok, flip.is_none() && t_shift.abs() <= 180_000);
    }

    #[test]
    fn arbitrary_bytes_are_never_an_event(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        if let Err(e) = Event::parse(&bytes) {
            prop_assert!(!e.field.is_empty());
        }
    }

    #[test]
    fn arbitrary_json_events_parse_or_name_a_field(data in json_value(), kind in 0usize..8, id in "[a-z_0-9]{0,12}") {
        let types = ["dsync.activated", "dsync.deleted", "dsync.user.created", "dsync.user.deleted",
                     "dsync.group.created", "dsync.group.user_added", "user.updated", "x.unknown"];
        let event = json!({"id": format!("event_{id}"), "event": types[kind], "data": data, "created_at": "2026-01-01T00:00:00Z"});
        if let Err(e) = Event::parse(&serde_json::to_vec(&event).unwrap()) {
            prop_assert!(!e.field.is_empty());
        }
    }

    #[test]
    fn mutated_valid_events_parse_or_name_a_field(which in 0usize..7, path in prop::collection::vec(0usize..20, 1..5), with in json_value()) {
        let mut event = valid_events()[which].clone();
        mutate(&mut event, &path, with);
        if let Err(e) = Event::parse(&serde_json::to_vec(&event).unwrap()) {
            prop_assert!(!e.field.is_empty(), "{}", event);
        }
    }

    #[test]
    fn directory_ids_parse_only_as_uuids(s in ".{0,60}") {
        let parsed = parse_directory_id(&s);
        prop_assert_eq!(parsed.is_ok(), s.len() == 36 && uuid::Uuid::try_parse(&s).is_ok());
        if let Err(ApiError::Validation { field, .. }) = parsed {
            prop_assert_eq!(field, "id");
        }
    }

    #[test]
    fn query_parameters_are_bounded_or_named(pairs in prop::collection::hash_map(
        prop::sample::select(vec!["limit", "after", "state", "email", "other"]).prop_map(str::to_owned),
        prop_oneof![".{0,40}", "-?[0-9]{1,6}", Just(uuid::Uuid::now_v7().to_string()), Just("active".to_owned())],
        0..5,
    )) {
        let q: HashMap<String, String> = pairs;
        for kind in [ListKind::Users, ListKind::Groups] {
            match ListParams::parse(kind, &q) {
                Ok(p) => prop_assert!(p.limit.is_none_or(|l| (1..=1000).contains(&l))),
                Err(ApiError::Validation { field, .. }) => prop_assert!(["limit", "after", "state", "email"].contains(&field.as_str())),
                Err(other) => prop_assert!(false, "unexpected {:?}", other),
            }
        }
    }
}

/// One verifier (JWKS file plus an HS256 secret) shared by every case.
fn verifier() -> &'static (tokio::runtime::Runtime, Verifier) {
    static SHARED: std::sync::OnceLock<(tokio::runtime::Runtime, Verifier)> =
        std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let jwks =
            std::env::temp_dir().join(format!("rollcall-fuzz-jwks-{}.json", std::process::id()));
        std::fs::write(&jwks, include_str!("fixtures/jwks.json")).unwrap();
        let verifier = rt
            .block_on(Verifier::new(AuthConfig {
                jwks_file: Some(jwks),
                hs256_secret: Some(b"secret".to_vec()),
                ..AuthConfig::default()
            }))
            .unwrap();
        (rt, verifier)
    })
}

proptest! {
    #![proptest_config(cases(3000))]

    #[test]
    fn arbitrary_bearer_tokens_are_refused(token in ".{0,300}", header in json_value(), payload in json_value()) {
        let (rt, verifier) = verifier();
        use base64::Engine;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let crafted = format!("{}.{}.{}", b64(&header), b64(&payload), token.replace('.', ""));
        for t in [token.as_str(), crafted.as_str()] {
            let header = format!("Bearer {t}");
            let verdict = rt.block_on(verifier.verify(Some(&header)));
            prop_assert!(verdict.is_err());
        }
    }
}

proptest! {
    #![proptest_config(cases(300))]

    #[test]
    fn a_bad_import_line_is_named_by_number_and_writes_nothing(
        good_before in 0usize..4,
        garbage in prop_oneof![".{0,80}".prop_map(|s| s.replace('\n', " ")), json_value().prop_map(|v| v.to_string())],
        which in 0usize..3,
        path in prop::collection::vec(0usize..20, 1..4),
        with in json_value(),
        mutated in any::<bool>(),
    ) {
        let lines = [
            r#"{"object":"directory","id":"directory_1","organization_id":"org_1","name":"D","type":"okta scim v2.0","state":"active"}"#,
            r#"{"object":"directory_user","id":"directory_user_1","directory_id":"directory_1","email":"a@b.test","state":"active"}"#,
            r#"{"object":"directory_group","id":"directory_group_1","directory_id":"directory_1","name":"G"}"#,
        ];
        let bad = if mutated {
            let mut v: Value = serde_json::from_str(lines[which]).unwrap();
            mutate(&mut v, &path, with);
            v.to_string()
        } else {
            garbage
        };
        let mut input: Vec<&str> = lines.iter().take(good_before.min(3)).copied().collect();
        input.push(&bad);
        let text = input.join("\n");
        let dir = tempfile::TempDir::new().unwrap();
        let store = Store::open(&dir.path().join("f.redb"), StoreOptions::default()).unwrap();
        match ndjson::import(&store, text.as_bytes(), |_| {}) {
            Ok(_) => {}
            Err(NdjsonError::Line { line, field, .. }) => {
                prop_assert!(!field.is_empty());
                prop_assert!(line >= 1 && line as usize <= input.len(), "line {} of {}", line, input.len());
                let snapshot = store.snapshot().unwrap();
                prop_assert!(snapshot.all_directories().unwrap().is_empty(), "an aborted import wrote something");
            }
            Err(other) => prop_assert!(false, "unexpected {}", other),
        }
    }
}

/// Timestamp spellings from the plausible to the absurd: every form the
/// lenient parser reads, with years far outside 1970–9999 among them.
fn timestamp_text() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            -300_000i64..300_000,
            1960i64..1980,
            9990i64..10_010,
            Just(-262_143i64)
        ],
        1u32..13,
        1u32..29,
        0u32..24,
        0u32..60,
        0u32..1_000_000,
        0usize..4,
    )
        .prop_map(|(year, mo, d, h, mi, frac, form)| {
            let y = if (0..=9999).contains(&year) {
                format!("{year:04}")
            } else {
                format!("{year:+05}")
            };
            match form {
                0 => format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:00.{frac:06}Z"),
                1 => format!("{y}-{mo:02}-{d:02} {h:02}:{mi:02}:00.{:03}", frac / 1000),
                2 => format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:00+05:30"),
                _ => format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:00"),
            }
        })
}

fn export_text(store: &Store) -> String {
    let mut out = Vec::new();
    ndjson::export(store, &mut out, |_| {}).unwrap();
    String::from_utf8(out).unwrap()
}

proptest! {
    #![proptest_config(cases(150))]

    /// Whatever timestamps an event carries, once it is accepted its effect
    /// survives export → import: a backup made after it always restores.
    #[test]
    fn every_accepted_event_survives_export_and_import(
        created in timestamp_text(),
        updated in timestamp_text(),
        at in timestamp_text(),
    ) {
        let directory = json!({"id": "event_d", "event": "dsync.activated", "created_at": "2026-01-01T00:00:00Z",
            "data": {"object": "directory", "id": "directory_1", "organization_id": "org_1", "name": "D",
                     "type": "okta scim v2.0", "state": "active", "created_at": created, "updated_at": updated}});
        let user = json!({"id": "event_u", "event": "dsync.user.created", "created_at": at,
            "data": {"object": "directory_user", "id": "directory_user_1", "directory_id": "directory_1",
                     "email": "a@b.test", "state": "active", "created_at": created, "updated_at": updated}});
        let dir = tempfile::TempDir::new().unwrap();
        let store = Store::open(&dir.path().join("a.redb"), StoreOptions::default()).unwrap();
        let mut accepted = 0;
        for event in [directory, user] {
            if let Ok(event) = Event::parse(&serde_json::to_vec(&event).unwrap()) {
                store.write(|tx| rollcall::ingest::apply::apply_event(tx, &event)).unwrap();
                accepted += 1;
            }
        }
        let exported = export_text(&store);
        let restored = Store::open(&dir.path().join("b.redb"), StoreOptions::default()).unwrap();
        let imported = ndjson::import(&restored, exported.as_bytes(), |_| {});
        prop_assert!(imported.is_ok(), "{} accepted event(s) exported a file import refuses: {:?}\n{}", accepted, imported.err(), exported);
        prop_assert_eq!(export_text(&restored), exported);
    }
}

/// SCIM PatchOp bodies as Okta and Entra send them, for mutation.
fn valid_patch_bodies() -> Vec<Value> {
    let schemas = json!(["urn:ietf:params:scim:api:messages:2.0:PatchOp"]);
    vec![
        json!({"schemas": schemas, "Operations": [{"op": "replace", "value": {"active": false}}]}),
        json!({"schemas": schemas, "Operations": [{"op": "Replace", "path": "active", "value": "False"}]}),
        json!({"schemas": schemas, "Operations": [{"op": "Add", "path": "members", "value": [{"value": "u1"}]}]}),
        json!({"schemas": schemas, "Operations": [{"op": "Remove", "path": "members[value eq \"u1\"]"}]}),
        json!({"schemas": schemas, "Operations": [
            {"op": "Remove", "path": "members", "value": [{"value": "u2"}]},
            {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "x@y"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": "m"}
        ]}),
    ]
}

fn scim_resource() -> Value {
    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "u1", "userName": "a@b.test",
        "active": true, "emails": [{"value": "a@b.test", "type": "work", "primary": true}],
        "members": [{"value": "u1"}, {"value": "u2"}]})
}

proptest! {
    #![proptest_config(cases(4000))]

    /// Any text as a filter or a PATCH path: a value or a positioned error
    /// inside the input, never a panic; what parses renders and re-parses to
    /// the same filter.
    #[test]
    fn scim_filters_and_paths_never_panic(text in ".{0,200}") {
        match filter::parse(&text) {
            Ok(f) => {
                let _ = f.matches(&scim_resource());
                prop_assert_eq!(filter::parse(&f.to_string()), Ok(f));
            }
            Err(e) => prop_assert!(e.position <= text.len(), "{:?} past the end of {:?}", e, text),
        }
        if let Err(e) = filter::parse_path(&text) {
            prop_assert!(e.position <= text.len());
        }
    }

    /// Arbitrary and mutated PatchOp bodies: applied or refused, never a
    /// panic, and the input resource is never changed.
    #[test]
    fn scim_patch_bodies_never_panic(
        which in 0usize..5,
        at in prop::collection::vec(any::<usize>(), 0..5),
        with in json_value(),
        arbitrary in json_value(),
    ) {
        let resource = scim_resource();
        let mut body = valid_patch_bodies().swap_remove(which);
        mutate(&mut body, &at, with);
        for body in [body, arbitrary] {
            if let Err(e) = patch::patch(&resource, &body) {
                prop_assert!(!e.message.is_empty());
            }
            prop_assert_eq!(&resource, &scim_resource());
        }
    }
}
