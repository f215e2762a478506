//! A full in-process request: routing, RS256 token verification (cached
//! after the first use, as for a client reusing its token), organization
//! scoping and the list body — everything but the socket.

mod common;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rollcall::api::routes;
use rollcall::app::app_state;
use rollcall::auth::{AuthConfig, Verifier};
use rollcall::config::Settings;
use rollcall::ingest::committer::Committer;

fn token() -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-rsa-1".into());
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    let claims = serde_json::json!({"org_id": common::dataset::ORG, "sub": "bench", "exp": exp});
    let key =
        EncodingKey::from_rsa_pem(include_bytes!("../tests/fixtures/rsa_private.pem")).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn request(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("request");
    for n in [10u64, 1_000] {
        let data = common::loaded(n);
        let jwks = data.dir.path().join("jwks.json");
        std::fs::write(&jwks, include_str!("../tests/fixtures/jwks.json")).unwrap();
        let state = runtime.block_on(async {
            let auth = Verifier::new(AuthConfig {
                jwks_file: Some(jwks),
                ..AuthConfig::default()
            })
            .await
            .unwrap();
            let (committer, _thread) = Committer::start(data.store.clone(), 64);
            let mut settings = Settings::new(data.dir.path().join("unused.redb"));
            settings.max_streams = 8;
            app_state(&settings, data.store.clone(), Arc::new(auth), committer).unwrap()
        });
        let filter = routes(state);
        let bearer = format!("Bearer {}", token());
        let path = format!(
            "/api/directories/{}/users",
            common::dataset::directory_uuid()
        );
        group.throughput(Throughput::Elements(1));
        group.bench_function(format!("GET users, {n}-user directory, cached body"), |b| {
            b.to_async(&runtime).iter(|| async {
                let resp = warp::test::request()
                    .path(&path)
                    .header("authorization", &bearer)
                    .reply(&filter)
                    .await;
                assert_eq!(resp.status(), 200);
                black_box(resp.body().len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, request);
criterion_main!(benches);
