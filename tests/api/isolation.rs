//! Organization isolation under attack: every kind of token of every
//! organization against every directory and route, in random order. Never a
//! 200 for another organization's data; a 404 for it is byte-identical to a
//! random UUID's; every authenticated answer says `Cache-Control: no-store`.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::workos::*;

const ORGS: [&str; 3] = [ORG_A, ORG_B, "org_01TESTINITECH000000000000"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A valid token of this organization (index into ORGS).
    Org(usize),
    Unauthorized,
    NoOrg,
}

fn b64(v: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
}

/// Every token variant for organization `i`, with what it must be treated as.
fn tokens(i: usize) -> Vec<(String, Expect, &'static str)> {
    let org = ORGS[i];
    let other = ORGS[(i + 1) % ORGS.len()];
    let exp = now_secs() + 3600;
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).unwrap();
    let attacker = EncodingKey::from_rsa_pem(RSA_ATTACKER_PRIVATE).unwrap();
    let claims = json!({"sub": "user_x", "org_id": org, "exp": exp});
    let valid = rs256(&claims);
    let mut swapped_payload: Vec<String> = valid.split('.').map(str::to_owned).collect();
    swapped_payload[1] =
        b64(&serde_json::to_vec(&json!({"sub": "user_x", "org_id": other, "exp": exp})).unwrap());
    let none_header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(&serde_json::to_vec(&claims).unwrap());
    vec![
        (valid.clone(), Expect::Org(i), "RS256"),
        (es256(&claims), Expect::Org(i), "ES256"),
        (
            rs256(&json!({"organization_id": org, "exp": exp})),
            Expect::Org(i),
            "organization_id claim",
        ),
        (
            rs256(&json!({"org_id": org, "organization_id": org, "exp": exp})),
            Expect::Org(i),
            "both claims agreeing",
        ),
        (
            rs256(&json!({"org_id": org, "exp": now_secs() - 3600})),
            Expect::Unauthorized,
            "expired",
        ),
        (
            swapped_payload.join("."),
            Expect::Unauthorized,
            "payload swapped to another org",
        ),
        (
            sign(
                Algorithm::RS256,
                Some(RSA_KID),
                &attacker,
                &json!({"org_id": other, "exp": exp}),
            ),
            Expect::Unauthorized,
            "re-signed with another key",
        ),
        (
            sign(
                Algorithm::HS256,
                Some(RSA_KID),
                &EncodingKey::from_secret(include_bytes!("../fixtures/rsa_public.pem")),
                &claims,
            ),
            Expect::Unauthorized,
            "HS256 keyed with the public key",
        ),
        (
            sign(
                Algorithm::HS256,
                None,
                &EncodingKey::from_secret(JWKS.as_bytes()),
                &claims,
            ),
            Expect::Unauthorized,
            "HS256 keyed with the JWKS",
        ),
        (
            format!("{none_header}.{payload}."),
            Expect::Unauthorized,
            "alg none",
        ),
        (
            rs256(&json!({"org_id": org, "organization_id": other, "exp": exp})),
            Expect::Unauthorized,
            "org_id and organization_id disagree",
        ),
        (
            rs256(&json!({"org_id": "", "exp": exp})),
            Expect::NoOrg,
            "empty org",
        ),
        (
            rs256(&json!({"org_id": "o".repeat(5000), "exp": exp})),
            Expect::Unauthorized,
            "oversized org",
        ),
        (
            rs256(&json!({"org_id": org.to_uppercase(), "exp": exp})),
            Expect::Org(usize::MAX),
            "org in another case",
        ),
        (
            rs256(&json!({"org_id": format!(" {org}"), "exp": exp})),
            Expect::Org(usize::MAX),
            "org with a space",
        ),
        (
            sign(
                Algorithm::RS256,
                Some(RSA_KID),
                &rsa,
                &json!({"org_id": [org], "exp": exp}),
            ),
            Expect::Unauthorized,
            "org as an array",
        ),
    ]
}

#[tokio::test]
async fn no_token_ever_reads_another_organizations_data() {
    let app = spawn_app().await;
    // Three organizations, two directories each, with users and groups.
    let mut events = Vec::new();
    for (o, org) in ORGS.iter().enumerate() {
        for d in 0..2 {
            let dir = format!("directory_{o}{d}");
            events.push(activated(&dir, org, 0));
            for u in 0..3 {
                events.push(user_event(
                    "created",
                    user(
                        &dir,
                        &format!("directory_user_{o}{d}{u}"),
                        &format!("u{o}{d}{u}@org{o}.test"),
                        1,
                    ),
                    1,
                ));
            }
            events.push(group_event(
                "created",
                group(
                    &dir,
                    &format!("directory_group_{o}{d}"),
                    &format!("G{o}{d}"),
                    2,
                ),
                2,
            ));
        }
    }
    app.send_all(&events).await;
    let mut directories: Vec<(usize, String)> = Vec::new();
    for (o, org) in ORGS.iter().enumerate() {
        for d in 0..2 {
            directories.push((
                o,
                directory_id(&app, org, &format!("directory_{o}{d}")).await,
            ));
        }
    }
    let random = uuid::Uuid::now_v7().to_string();

    let mut requests = Vec::new();
    for o in 0..ORGS.len() {
        for (token, expect, what) in tokens(o) {
            requests.push((
                token.clone(),
                expect,
                what,
                "/api/directories".to_owned(),
                None,
            ));
            for (owner, dir) in directories
                .iter()
                .chain([(usize::MAX - 1, random.clone())].iter())
            {
                for suffix in [
                    "",
                    "/users",
                    "/groups",
                    "/users?limit=1",
                    "/users?state=active",
                    "/users?email=u000@org0.test",
                    "/groups?limit=2",
                ] {
                    requests.push((
                        token.clone(),
                        expect,
                        what,
                        format!("/api/directories/{dir}{suffix}"),
                        Some(*owner),
                    ));
                }
            }
        }
    }
    let mut rng = StdRng::seed_from_u64(42);
    requests.shuffle(&mut rng);

    let (_, not_found) = app
        .get_raw(&format!("/api/directories/{random}"), &token_for(ORG_A))
        .await;
    let mut checked = 0;
    for (token, expect, what, path, owner) in requests {
        let head = rng.random_bool(0.1);
        let req = if head {
            app.client.head(format!("{}{path}", app.base))
        } else {
            app.client.get(format!("{}{path}", app.base))
        };
        let resp = req.bearer_auth(&token).send().await.unwrap();
        let status = resp.status();
        assert_eq!(resp.headers()["cache-control"], "no-store", "{what} {path}");
        let body = resp.bytes().await.unwrap();
        let ctx = format!(
            "{what} → {path}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        match expect {
            Expect::Unauthorized => assert_eq!(status, StatusCode::UNAUTHORIZED, "{ctx}"),
            Expect::NoOrg => assert_eq!(status, StatusCode::FORBIDDEN, "{ctx}"),
            Expect::Org(me) => match owner {
                Some(owner) if owner == me => assert_eq!(status, StatusCode::OK, "{ctx}"),
                Some(_) => {
                    assert_eq!(status, StatusCode::NOT_FOUND, "{ctx}");
                    if !head {
                        assert_eq!(
                            body.as_ref(),
                            not_found.as_slice(),
                            "a foreign directory's 404 is a random UUID's: {ctx}"
                        );
                    }
                }
                None => {
                    assert_eq!(status, StatusCode::OK, "{ctx}");
                    if !head {
                        let list: Value = serde_json::from_slice(&body).unwrap();
                        for d in list.as_array().unwrap() {
                            assert_eq!(
                                d["organization_id"],
                                ORGS.get(me).copied().unwrap_or("none"),
                                "{ctx}"
                            );
                        }
                    }
                }
            },
        }
        if status == StatusCode::OK && !head {
            let text = String::from_utf8_lossy(&body);
            for (o, _) in ORGS.iter().enumerate() {
                if Expect::Org(o) != expect {
                    assert!(
                        !text.contains(&format!("@org{o}.test")),
                        "another org's user leaked: {ctx}"
                    );
                    assert!(!text.contains(ORGS[o]), "another org's id leaked: {ctx}");
                }
            }
        }
        checked += 1;
    }
    println!("isolation: {checked} requests checked");
}

#[tokio::test]
async fn an_etag_from_one_organization_reveals_nothing_to_another() {
    let app = spawn_app().await;
    app.send_all(&[
        activated("directory_A", ORG_A, 0),
        activated("directory_B", ORG_B, 0),
    ])
    .await;
    let theirs = directory_id(&app, ORG_B, "directory_B").await;
    let url = format!("{}/api/directories/{theirs}/users", app.base);
    let etag = app
        .client
        .get(&url)
        .bearer_auth(token_for(ORG_B))
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .clone();

    for tag in [etag.to_str().unwrap(), "*"] {
        let resp = app
            .client
            .get(&url)
            .bearer_auth(token_for(ORG_A))
            .header("if-none-match", tag)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "no 304 across organizations for {tag}"
        );
    }
}
