//! The gateway filter's decisions on client input: the path classifier and body validation
//! with model resolution (`tollgate_gateway::request::route`), over a fixed configuration.

use std::sync::OnceLock;

use tollgate_contract::config::{GatewayConfig, GatewayConfigDoc, ModelDoc, SCHEMA_VERSION};
use tollgate_contract::keys::{digest, Role};
use tollgate_contract::keytable::{EntrySpec, Table};
use tollgate_contract::state::Operation;
use tollgate_gateway::request;

fn config() -> &'static GatewayConfig {
    static CFG: OnceLock<GatewayConfig> = OnceLock::new();
    CFG.get_or_init(|| {
        GatewayConfig::compile(GatewayConfigDoc {
            schema: SCHEMA_VERSION,
            quotas: Vec::new(),
            model_prices: Default::default(),
            quota_hold_seconds: tollgate_contract::config::DEFAULT_HOLD_SECONDS,
            max_body_bytes: 1 << 20,
            models: vec![
                ModelDoc { name: "a".into(), cluster: "ca".into(), owned_by: "t".into(), created: 1, providers: Vec::new(), without: Vec::new() },
                ModelDoc { name: "b".into(), cluster: "cb".into(), owned_by: "t".into(), created: 1, providers: Vec::new(), without: Vec::new() },
                ModelDoc { name: "m".into(), cluster: "cm".into(), owned_by: "t".into(), created: 1, providers: Vec::new(), without: Vec::new() },
            ],
            fault_injection: false,
        })
        .expect("the fuzz configuration compiles")
    })
}

fn keys() -> &'static Table {
    static KEYS: OnceLock<Table> = OnceLock::new();
    KEYS.get_or_init(|| {
        let only_a = ["a".to_owned()];
        let key = |secret: &str, id: &'static str, models| EntrySpec { digest: digest(secret), id, role: Role::User, expires_at: None, models };
        Table::from_entries(1, 1, &[key("tg-all", "all", None), key("tg-only-a", "only-a", Some(&only_a[..]))])
            .expect("the fuzz key table encodes")
    })
}

/// `METHOD path` (first space splits): a classified path is an operation, anything else a
/// 404/405 with a message of bounded length.
pub fn classify(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (method, path) = text.split_once(' ').unwrap_or(("POST", &text));
    match request::classify(method, path) {
        Ok(Operation::BedrockConverse { model, .. }) => assert!(!model.is_empty()),
        Ok(_) => {}
        Err(e) => {
            assert!((400..500).contains(&e.status()), "classify error status {}", e.status());
        }
    }
}

/// Selector byte: operation (chat, embeddings, Anthropic messages, Bedrock Converse for model
/// `m`) and key (all models, or model `a` only); the rest is the body.
pub fn route(data: &[u8]) {
    let (sel, body) = crate::selector(data);
    let cfg = config();
    let secret = if sel & 0x10 == 0 { "Bearer tg-all" } else { "Bearer tg-only-a" };
    let key = request::authenticate(Some(keys()), Some(secret), None, 0).expect("fuzz key authenticates");
    let op = match sel % 4 {
        0 => Operation::ChatCompletions,
        1 => Operation::Embeddings,
        2 => Operation::AnthropicMessages,
        _ => Operation::BedrockConverse { model: "m".into(), stream: sel & 0x20 != 0 },
    };
    match request::route(cfg, &key, &op, body) {
        Ok(r) => {
            assert!(cfg.model(&r.model).is_some(), "routed to an unknown model");
            assert!(key.models.permits(&r.model), "routed to a model the key may not use");
            assert_eq!(r.facts.body_len, u64::try_from(body.len()).ok());
            // A routed body parses whole into a value, as the provider filter parses it: within
            // serde_json's nesting limit, every number an f64 holds (issue 9, finding 1: a
            // refusal after routing was retried and counted against the deployment), and no
            // top-level routing or credential parameter (catalogue B-26).
            let value = serde_json::from_slice::<serde_json::Value>(body);
            assert!(value.is_ok(), "routed a body that serde_json refuses: {:?}", value.err());
            if let Ok(serde_json::Value::Object(map)) = value {
                let forbidden = tollgate_gateway::json_scan::FORBIDDEN_PARAMETERS;
                assert!(!map.keys().any(|k| forbidden.contains(&k.as_str())), "routed a forbidden parameter");
            }
        }
        Err(e) => {
            assert!((400..500).contains(&e.status()), "client body gave status {}", e.status());
            assert!(e.message.len() <= 1024, "error message of {} bytes", e.message.len());
        }
    }
}
