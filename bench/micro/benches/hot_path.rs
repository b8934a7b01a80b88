//! The hot pure functions of one request, measured natively (the wasm VM adds its own factor):
//! key lookup, request validation and routing, the OpenAI passthrough rewrite, OpenAI→Bedrock
//! translation plus SigV4 planning, and streamed chunk translation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate_llm::openai::ChatRequest;
use tollgate_llm::{eventstream, openai_to_bedrock, StreamTranslator};
use tollgate_contract::config::{DeploymentMeta, GatewayConfig, GatewayConfigDoc, ModelDoc, ProviderKind, SCHEMA_VERSION};
use tollgate_contract::keys::{digest, Role};
use tollgate_contract::keytable::{EntrySpec, Table};
use tollgate_provider::plan::{self, Attempt};
use tollgate_provider::rewrite as provider;
use tollgate_contract::state::Operation;
use tollgate_gateway::request;

const BODY: &[u8] = include_bytes!("../../requests/chat-2k.json");

/// A key table of `n` keys, as a worker holds it.
fn keys(n: usize) -> Table {
    let ids: Vec<String> = (0..n).map(|i| format!("key_{i:020}")).collect();
    let entries: Vec<EntrySpec<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| EntrySpec { digest: digest(&format!("tg-key-{i}")), id, role: Role::User, expires_at: None, models: None })
        .collect();
    Table::from_entries(1, 1, &entries).unwrap()
}

fn config() -> GatewayConfig {
    GatewayConfig::compile(GatewayConfigDoc {
        schema: SCHEMA_VERSION,
        quotas: Vec::new(),
        model_prices: Default::default(),
        quota_hold_seconds: tollgate_contract::config::DEFAULT_HOLD_SECONDS,
        max_body_bytes: 8 << 20,
        models: vec![ModelDoc { name: "bench-model".into(), cluster: "c".into(), owned_by: "t".into(), created: 0, providers: Vec::new(), without: Vec::new() }],
        fault_injection: false,
    })
    .unwrap()
}

fn meta(provider: ProviderKind) -> DeploymentMeta {
    DeploymentMeta {
        id: "d".into(),
        provider,
        model: "us.anthropic.claude-3-5-haiku-20241022-v1:0".into(),
        authority: "bedrock-runtime.us-east-1.amazonaws.com".into(),
        base_path: String::new(),
        credential: None,
        region: Some("us-east-1".into()),
        api_version: None,
        payload: None,
        responses_api: false,
        price: None,
    }
}

fn body_for_bench_model() -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(BODY).unwrap();
    v["model"] = "bench-model".into();
    serde_json::to_vec(&v).unwrap()
}

fn bench(c: &mut Criterion) {
    let cfg = config();
    for n in [16, 100_000] {
        let table = keys(n);
        c.bench_function(&format!("key lookup ({n} keys)"), |b| {
            b.iter(|| request::authenticate(Some(&table), Some(black_box("Bearer tg-key-7")), None, 0).unwrap())
        });
    }
    // What a worker does when keys change: decode (check) one changed shard of a 100,000-key
    // table, and every shard (the first load).
    let ids: Vec<String> = (0..100_000).map(|i| format!("key_{i:020}")).collect();
    let entries: Vec<EntrySpec<'_>> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| EntrySpec { digest: digest(&format!("tg-key-{i}")), id, role: Role::User, expires_at: None, models: None })
        .collect();
    let shards: Vec<Vec<u8>> = (0..=u8::MAX)
        .map(|i| {
            let mine: Vec<EntrySpec<'_>> = entries.iter().filter(|e| e.digest[0] == i).cloned().collect();
            tollgate_contract::keytable::encode_shard(i, 1, 1, &mine).unwrap()
        })
        .collect();
    c.bench_function("decode one shard of a 100k-key table", |b| {
        b.iter(|| tollgate_contract::keytable::Shard::decode(black_box(&shards[7]), 7).unwrap())
    });
    c.bench_function("decode all 256 shards (100k keys)", |b| {
        b.iter(|| {
            for (i, s) in (0..=u8::MAX).zip(&shards) {
                black_box(tollgate_contract::keytable::Shard::decode(s, i).unwrap());
            }
        })
    });
    let table = keys(16);
    let body = body_for_bench_model();
    let key = request::authenticate(Some(&table), Some("Bearer tg-key-1"), None, 0).unwrap();
    c.bench_function("validate + route 2 KB chat", |b| {
        b.iter(|| request::route(&cfg, &key, &Operation::ChatCompletions, black_box(&body)).unwrap())
    });
    // The pre-routing scan inside it (depth, number range, forbidden top-level parameters).
    c.bench_function("json scan 2 KB chat", |b| b.iter(|| tollgate_gateway::json_scan::scan(black_box(&body), 127)));
    let m = meta(ProviderKind::Openai);
    c.bench_function("OpenAI passthrough rewrite 2 KB", |b| {
        b.iter(|| provider::request(&m, &Operation::ChatCompletions, black_box(&body)).unwrap())
    });
    c.bench_function("OpenAI -> Bedrock request 2 KB", |b| {
        b.iter(|| {
            let req: ChatRequest = serde_json::from_slice(black_box(&body)).unwrap();
            openai_to_bedrock::request(&req).unwrap()
        })
    });
    let bm = meta(ProviderKind::Bedrock);
    let cred = tollgate_contract::config::Credential {
        api_key: None,
        aws: Some(tollgate_contract::config::AwsCredential {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        }),
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    c.bench_function("plan OpenAI -> Bedrock attempt (translate + SigV4) 2 KB", |b| {
        b.iter(|| {
            let a = Attempt { meta: &bm, op: &Operation::ChatCompletions, credential: Some(&cred), body: black_box(&body), request_id: "bench", now };
            plan::plan(&a).unwrap().body.len()
        })
    });
    let frame = eventstream::encode(
        &[(":event-type", "contentBlockDelta"), (":content-type", "application/json"), (":message-type", "event")],
        br#"{"contentBlockIndex":0,"delta":{"text":"Hello there, general"},"p":"abcdefghijkl"}"#,
    );
    let start = eventstream::encode(
        &[(":event-type", "messageStart"), (":content-type", "application/json"), (":message-type", "event")],
        br#"{"role":"assistant"}"#,
    );
    c.bench_function("ConverseStream chunk -> OpenAI SSE", |b| {
        let mut t = openai_to_bedrock::StreamToOpenAi::new("m", "chatcmpl-1", 1, false);
        t.feed(&start).unwrap();
        b.iter(|| t.feed(black_box(&frame)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
