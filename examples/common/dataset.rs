//! A synthetic but realistic directory for benchmarks: one organization, one
//! directory, `n` users of about 850 bytes of Char JSON each (a third of it
//! `raw_attributes`), as rollcall NDJSON. Deterministic for a given `n`.

use std::io::Write;

pub const ORG: &str = "org_01BENCHACME00000000000000";
pub const DIRECTORY: &str = "directory_01BENCH00000000000001";
/// When the dataset's directory was created at WorkOS.
pub const DIRECTORY_CREATED: &str = "2026-01-01T00:00:00.000Z";
/// The internal id rollcall derives for the dataset's directory (from its
/// WorkOS id and creation time), so tools can build URLs. `benches/load.py`
/// derives the same one in Python.
pub fn directory_uuid() -> String {
    let created =
        rollcall::model::Timestamp::parse_lenient(DIRECTORY_CREATED).expect("a valid timestamp");
    rollcall::model::DirectoryId::derive(DIRECTORY, created).to_string()
}

const FIRST: [&str; 16] = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Linus",
    "Radia",
    "Ken",
    "Frances",
    "John",
    "Katherine",
    "Dennis",
    "Hedy",
    "Tim",
];
const LAST: [&str; 16] = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Hamilton",
    "Torvalds",
    "Perlman",
    "Thompson",
    "Allen",
    "McCarthy",
    "Johnson",
    "Ritchie",
    "Lamarr",
    "Berners-Lee",
];
const TITLES: [&str; 6] = [
    "Senior Software Engineer",
    "Product Manager",
    "Staff Designer",
    "Support Specialist",
    "Account Executive",
    "Engineering Manager",
];
const DEPARTMENTS: [&str; 6] = [
    "Engineering",
    "Product",
    "Design",
    "Support",
    "Sales",
    "People",
];
const CITIES: [&str; 5] = ["Berlin", "Lisbon", "Toronto", "Singapore", "Austin"];

/// Writes the dataset: a directory line, then `n` user lines.
pub fn write(n: u64, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        r#"{{"object":"directory","id":"{DIRECTORY}","organization_id":"{ORG}","name":"Bench Okta","type":"okta scim v2.0","state":"active","domains":[{{"object":"organization_domain","domain":"example-corp.test"}}],"created_at":"{DIRECTORY_CREATED}","updated_at":"{DIRECTORY_CREATED}"}}"#
    )?;
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..n {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (seed >> 33) as usize;
        let first = FIRST[r % 16];
        let last = LAST[(r >> 4) % 16];
        let title = TITLES[(r >> 8) % 6];
        let dept = DEPARTMENTS[(r >> 11) % 6];
        let city = CITIES[(r >> 14) % 5];
        let state = if r.is_multiple_of(17) {
            "suspended"
        } else {
            "active"
        };
        let email = format!(
            "{}.{}{i}@emea.example-corporation.test",
            first.to_lowercase(),
            last.to_lowercase()
        );
        // Internal ids: UUIDv7-shaped, increasing with i (creation order).
        let id = format!(
            "01900000-{:04x}-7{:03x}-8{:03x}-{:012x}",
            (i >> 24) & 0xffff,
            (i >> 12) & 0xfff,
            i & 0xfff,
            i + 2
        );
        writeln!(
            out,
            concat!(
                r#"{{"object":"directory_user","id":"directory_user_01HBENCH{i:018}","directory_id":"{dir}","organization_id":"{org}","#,
                r#""idp_id":"00u{idp:017x}","email":"{email}","emails":[{{"primary":true,"type":"work","value":"{email}"}}],"#,
                r#""first_name":"{first}","last_name":"{last}","state":"{state}","#,
                r#""raw_attributes":{{"userName":"{email}","displayName":"{first} {last}","title":"{title}","department":"{dept}","employeeNumber":"E{i:08}","costCenter":"CC-{cc:04}","location":"{city}","phoneNumber":"+49 30 {phone:07}","preferredLanguage":"en-US","manager":{{"value":"E{mgr:08}","displayName":"{mfirst} {mlast}"}},"active":{active}}},"#,
                r#""custom_attributes":{{"department":"{dept}"}},"created_at":"2026-01-02T03:04:05.678Z","updated_at":"2026-01-02T03:04:05.678Z","#,
                r#""rollcall":{{"id":"{id}","created_at":"2026-01-02T03:04:05.678Z","updated_at":"2026-01-02T03:04:05.678Z","user_id":{user_id}}}}}"#
            ),
            i = i,
            dir = DIRECTORY,
            org = ORG,
            idp = seed,
            email = email,
            first = first,
            last = last,
            state = state,
            title = title,
            dept = dept,
            city = city,
            active = state == "active",
            id = id,
            cc = r % 9973,
            phone = r % 9_999_991,
            mgr = i / 8,
            mfirst = FIRST[(r >> 18) % 16],
            mlast = LAST[(r >> 22) % 16],
            user_id = if r.is_multiple_of(2) {
                format!("\"user_01HBENCH{i:018}\"")
            } else {
                "null".to_owned()
            },
        )?;
    }
    Ok(())
}
