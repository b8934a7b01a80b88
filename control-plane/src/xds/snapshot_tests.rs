use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::TypedExtensionConfig;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::plugin_config::Vm;
use envoy_types::pb::google::protobuf::StringValue;
use prost::Message;
use tollgate_contract::config::{ContainerPayload, DeploymentMeta, GatewayConfig, PromptTemplate};

use super::*;

/// The snapshot tests use private and loopback addresses (the egress policy has its own tests).
static OPEN_SETTINGS: crate::model::EgressSettings =
    crate::model::EgressSettings { allow_loopback: true, allow_private: true, allow_hosts: Vec::new() };
static OPEN: crate::egress::Egress<'static> = crate::egress::Egress { settings: &OPEN_SETTINGS, own_ports: &[] };

use crate::model::{DeploymentSpec, Provider, SagemakerPayload, ServedModel, Settings};
fn env() -> XdsEnv {
    XdsEnv {
        gateway_addr: "0.0.0.0".into(),
        gateway_port: 8080,
        gateway_filter_wasm: "/w/g.wasm".into(),
        provider_filter_wasm: "/w/p.wasm".into(),
        demo_url: UpstreamUrl::parse("http://127.0.0.1:8081/demo/v1").unwrap(),
        upstream_ca_file: "/etc/ssl/ca.pem".into(),
        tls: None,
        fault_injection: false,
        own_ports: vec![8080, 8081],
    }
}

fn dep(provider: Provider, url: Option<&str>, priority: u32) -> DeploymentSpec {
    DeploymentSpec {
        provider,
        base_url: url.map(str::to_owned),
        model: None,
        credential: Some("c".into()),
        weight: 1,
        priority,
        region: None,
        api_version: None,
        payload: None,
        prompt_template: None,
        responses_api: false,
    }
}

/// A served model from stored deployments (which must parse).
fn served(name: &str, created: i64, deployments: Vec<DeploymentSpec>) -> ServedModel {
    ServedModel { name: name.into(), created, deployments: deployments.iter().map(|d| d.parse(name, &OPEN).unwrap()).collect() }
}

fn model() -> Model {
    Model {
        settings: Settings::default(),
        credentials: Default::default(),
        models: vec![
            served("demo", 5, vec![dep(Provider::Demo, None, 0)]),
            served(
                "gpt",
                6,
                vec![dep(Provider::Openai, Some("https://api.example.com/v1"), 10), dep(Provider::Openai, Some("http://10.0.0.1:9000/v1"), 20)],
            ),
        ],
        quotas: Vec::new(),
        quota_keys: Default::default(),
        envoys: 1,
    }
}

fn gateway_config(s: &Snapshot) -> (String, Wasm) {
    let any = &s.get(ECDS_TYPE).unwrap().items[contract::ECDS_GATEWAY_FILTER];
    let tec = TypedExtensionConfig::decode(any.value.as_slice()).unwrap();
    let wasm = Wasm::decode(tec.typed_config.unwrap().value.as_slice()).unwrap();
    let cfg = wasm.config.as_ref().unwrap().configuration.as_ref().unwrap();
    (StringValue::decode(cfg.value.as_slice()).unwrap().value, wasm)
}

/// The deployment an endpoint carries in its metadata.
fn endpoint_meta(ep: &envoy_types::pb::envoy::config::endpoint::v3::LbEndpoint) -> DeploymentMeta {
    let md = &ep.metadata.as_ref().unwrap().filter_metadata;
    match &md[contract::METADATA_NAMESPACE].fields[contract::METADATA_DEPLOYMENT_KEY].kind {
        Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => serde_json::from_str(s).unwrap(),
        other => panic!("unexpected {other:?}"),
    }
}

/// A model with deployments at OpenAI (priority 0), Bedrock (1) and, with `anthropic`,
/// Anthropic (2); and a requests quota on each provider named.
fn with_providers(m: &mut Model, name: &str, anthropic: bool, quotas: &[&str]) {
    let mut deps = vec![
        dep(Provider::Openai, Some("http://10.0.0.1:9000/v1"), 0),
        DeploymentSpec { region: Some("us-east-1".into()), ..dep(Provider::Bedrock, Some("http://10.0.0.2:9000"), 1) },
    ];
    if anthropic {
        deps.push(dep(Provider::Anthropic, Some("http://10.0.0.3:9000/v1"), 2));
    }
    m.models.push(served(name, 7, deps));
    for p in quotas {
        let q = serde_json::json!({"id": format!("quota_{p}"), "metric": "requests", "window_seconds": 60, "limit": 2, "provider": p});
        m.quotas.push(serde_json::from_value(q).unwrap());
    }
}

#[test]
fn has_every_type() {
    let s = build(&model(), &env());
    assert_eq!(s.get(LISTENER_TYPE).unwrap().items.len(), 1);
    assert_eq!(s.get(ROUTE_TYPE).unwrap().items.len(), 1);
    assert_eq!(s.get(CLUSTER_TYPE).unwrap().items.len(), 2);
    assert_eq!(s.get(ECDS_TYPE).unwrap().items.len(), 1);
}

#[test]
fn gateway_filter_config_parses_in_the_filter_and_holds_no_secret() {
    let s = build(&model(), &env());
    let (json, wasm) = gateway_config(&s);
    let cfg = GatewayConfig::parse(json.as_bytes()).unwrap();
    // the keys travel as the key table, not in the configuration
    assert!(!json.contains("keys") && !json.contains("digest"), "{json}");
    assert_eq!(cfg.model("gpt").unwrap().cluster, cluster_name("gpt"));
    assert_eq!(cfg.models[0].name, "demo");
    let pc = wasm.config.unwrap();
    assert_eq!(pc.allow_on_headers_stop_iteration.map(|b| b.value), Some(true));
    assert!(matches!(pc.vm, Some(Vm::VmConfig(v)) if v.vm_id == contract::VM_ID));
    assert_eq!(pc.failure_policy, envoy_types::pb::envoy::extensions::wasm::v3::FailurePolicy::FailReload as i32);
}

#[test]
fn building_twice_is_deterministic() {
    let mut m1 = model();
    // Priced models too: their prices travel in a map in the gateway filter's configuration.
    for (i, m) in m1.models.iter_mut().enumerate() {
        for d in &mut m.deployments {
            d.price = Some(tollgate_contract::config::Price { input: 100 + i as u64, output: 200, cache_read: 0, cache_write: 0 });
        }
    }
    assert!(m1.models.len() >= 2);
    let versions = |m: &Model| build(m, &env()).by_type.values().map(|r| r.version.clone()).collect::<Vec<_>>();
    let first = versions(&m1);
    for _ in 0..8 {
        assert_eq!(versions(&m1), first);
    }
}

#[test]
fn cluster_endpoints_carry_deployments_by_priority() {
    let s = build(&model(), &env());
    let c = Cluster::decode(s.get(CLUSTER_TYPE).unwrap().items[&cluster_name("gpt")].value.as_slice()).unwrap();
    let la = c.load_assignment.unwrap();
    // priorities 10 and 20 are renumbered 0 and 1
    assert_eq!(la.endpoints.iter().map(|e| e.priority).collect::<Vec<_>>(), vec![0, 1]);
    let ep = &la.endpoints[0].lb_endpoints[0];
    let md = &ep.metadata.as_ref().unwrap().filter_metadata;
    let meta = endpoint_meta(ep);
    assert_eq!(meta.authority, "api.example.com");
    assert_eq!(meta.base_path, "/v1");
    assert_eq!(meta.model, "gpt");
    assert_eq!(meta.credential.as_deref(), Some("c"));
    // the https deployment gets TLS with SNI, the http one does not
    assert!(md.contains_key("envoy.transport_socket_match"));
    assert_eq!(c.transport_socket_matches.len(), 1);
    let plain = &la.endpoints[1].lb_endpoints[0];
    assert!(!plain.metadata.as_ref().unwrap().filter_metadata.contains_key("envoy.transport_socket_match"));
    match &plain.host_identifier {
        Some(HostIdentifier::Endpoint(e)) => assert_eq!(e.hostname, "10.0.0.1:9000"),
        other => panic!("unexpected {other:?}"),
    }
    // `auto_host_rewrite` puts the endpoint's hostname in `:authority`: it must be exactly what
    // the provider filter plans (else the filter writes it again on every attempt).
    for ep in la.endpoints.iter().flat_map(|l| &l.lb_endpoints) {
        match &ep.host_identifier {
            Some(HostIdentifier::Endpoint(e)) => assert_eq!(e.hostname, endpoint_meta(ep).authority),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn the_route_rewrites_the_authority_and_drops_headers_no_provider_gets() {
    use envoy_types::pb::envoy::config::route::v3::{route::Action, route_action::HostRewriteSpecifier, RouteConfiguration};
    let s = build(&model(), &env());
    let rc = RouteConfiguration::decode(s.get(ROUTE_TYPE).unwrap().items[ROUTE_NAME].value.as_slice()).unwrap();
    let route = &rc.virtual_hosts[0].routes[0];
    let Some(Action::Route(action)) = &route.action else { panic!("not a route action") };
    assert!(matches!(&action.host_rewrite_specifier, Some(HostRewriteSpecifier::AutoHostRewrite(b)) if b.value));
    let removed = &route.request_headers_to_remove;
    assert!(removed.contains(&contract::HEADER_CLUSTER.to_owned()));
    for h in ["accept-encoding", "cookie", "x-forwarded-for", "x-amzn-trace-id"] {
        assert!(removed.contains(&h.to_owned()), "{h} not removed");
    }
    // Only headers the provider filter's allow-list would remove anyway (it does not run here:
    // the forwarded names are pinned instead).
    for h in ["user-agent", "x-request-id", "x-forwarded-proto", "x-envoy-attempt-count", "content-type", "accept", "authorization"] {
        assert!(!removed.contains(&h.to_owned()), "{h} removed");
    }
}

#[test]
fn sagemaker_tgi_deployments_carry_their_payload_and_template() {
    let mut m = model();
    let mut tgi = dep(Provider::Sagemaker, None, 0);
    tgi.region = Some("eu-west-1".into());
    tgi.model = Some("my-endpoint".into());
    tgi.payload = Some(SagemakerPayload::Tgi);
    tgi.prompt_template = Some(PromptTemplate::Mistral);
    let mut openai_style = tgi.clone();
    openai_style.payload = None;
    openai_style.prompt_template = None;
    openai_style.priority = 1;
    m.models.push(served("sm", 7, vec![tgi, openai_style]));
    let s = build(&m, &env());
    let c = Cluster::decode(s.get(CLUSTER_TYPE).unwrap().items[&cluster_name("sm")].value.as_slice()).unwrap();
    let metas: Vec<DeploymentMeta> = c
        .load_assignment
        .unwrap()
        .endpoints
        .iter()
        .map(|e| {
            let md = &e.lb_endpoints[0].metadata.as_ref().unwrap().filter_metadata;
            match &md[contract::METADATA_NAMESPACE].fields[contract::METADATA_DEPLOYMENT_KEY].kind {
                Some(envoy_types::pb::google::protobuf::value::Kind::StringValue(s)) => serde_json::from_str(s).unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        })
        .collect();
    assert_eq!(metas[0].authority, "runtime.sagemaker.eu-west-1.amazonaws.com");
    assert_eq!(metas[0].payload, Some(ContainerPayload::Tgi { prompt_template: PromptTemplate::Mistral }));
    assert_eq!(metas[1].payload, None);
}

#[test]
fn demo_points_at_the_control_plane() {
    let s = build(&model(), &env());
    let c = Cluster::decode(s.get(CLUSTER_TYPE).unwrap().items[&cluster_name("demo")].value.as_slice()).unwrap();
    let la = c.load_assignment.unwrap();
    let md = la.endpoints[0].lb_endpoints[0].metadata.as_ref().unwrap();
    let raw = format!("{:?}", md.filter_metadata[contract::METADATA_NAMESPACE]);
    assert!(raw.contains("127.0.0.1:8081") && raw.contains("/demo/v1") && raw.contains(crate::demo::DEMO_MODEL_ID), "{raw}");
}

#[test]
fn tls_listener_serves_tls_and_plain_on_one_port() {
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    let mut e = env();
    e.tls = Some(ListenerTls { cert_file: "/t/cert.pem".into(), key_file: "/t/key.pem".into() });
    let s = build(&model(), &e);
    let l = Listener::decode(s.get(LISTENER_TYPE).unwrap().items[LISTENER_NAME].value.as_slice()).unwrap();
    assert_eq!(l.filter_chains.len(), 2);
    assert_eq!(l.filter_chains[0].filter_chain_match.as_ref().unwrap().transport_protocol, "tls");
    assert_eq!(l.listener_filters[0].name, "envoy.filters.listener.tls_inspector");
    let plain = build(&model(), &env());
    assert_ne!(plain.get(LISTENER_TYPE).unwrap().version, s.get(LISTENER_TYPE).unwrap().version);
}

#[test]
fn the_listener_carries_the_edge_settings() {
    use envoy_types::pb::envoy::config::listener::v3::{filter, Listener};
    let mut m = model();
    m.settings.edge.request_headers_timeout_seconds = 7;
    m.settings.edge.max_request_headers_kb = 32;
    m.settings.edge.xff_num_trusted_hops = 1;
    let s = build(&m, &env());
    let l = Listener::decode(s.get(LISTENER_TYPE).unwrap().items[LISTENER_NAME].value.as_slice()).unwrap();
    let Some(filter::ConfigType::TypedConfig(any)) = &l.filter_chains[0].filters[0].config_type else { panic!("no HCM") };
    let h = hcm::HttpConnectionManager::decode(any.value.as_slice()).unwrap();
    assert_eq!(h.request_headers_timeout.unwrap().seconds, 7);
    assert_eq!(h.request_timeout.unwrap().seconds, 60);
    assert_eq!(h.stream_idle_timeout.unwrap().seconds, 300);
    assert_eq!(h.max_request_headers_kb.unwrap().value, 32);
    assert_eq!((h.use_remote_address.unwrap().value, h.xff_num_trusted_hops), (true, 1));
    let common = h.common_http_protocol_options.unwrap();
    assert_eq!(common.headers_with_underscores_action, core::http_protocol_options::HeadersWithUnderscoresAction::RejectRequest as i32);
    assert_eq!(common.max_headers_count.unwrap().value, 100);
    assert_eq!(h.http2_protocol_options.unwrap().max_concurrent_streams.unwrap().value, 100);
    assert!(h.normalize_path.unwrap().value && h.merge_slashes);
    // Envoy's status-matched replies come before the protocol-error one (which also matches 431)
    let statuses: Vec<u32> = h.local_reply_config.unwrap().mappers.iter().map(|m| m.status_code.unwrap().value).collect();
    assert_eq!(&statuses[..4], &[431, 408, 400, 503]);
    // the listener's version follows the edge settings
    assert_ne!(s.get(LISTENER_TYPE).unwrap().version, build(&model(), &env()).get(LISTENER_TYPE).unwrap().version);
}

#[test]
fn a_model_on_a_provider_with_a_quota_has_a_cluster_without_that_provider() {
    let mut m = model();
    with_providers(&mut m, "fo", false, &[]);
    // Without a quota of a provider nothing changes.
    let plain = build(&m, &env());
    assert_eq!(plain.get(CLUSTER_TYPE).unwrap().items.len(), 3);
    let q = serde_json::json!({"id": "quota_1", "metric": "requests", "window_seconds": 60, "limit": 2, "provider": "openai"});
    m.quotas.push(serde_json::from_value(q).unwrap());
    let s = build(&m, &env());
    let clusters = &s.get(CLUSTER_TYPE).unwrap().items;
    // Only the model with another provider gets one ("gpt" is OpenAI only).
    let detour = format!("{}_no_openai", cluster_name("fo"));
    assert_eq!(clusters.len(), 4, "{:?}", clusters.keys().collect::<Vec<_>>());
    assert_ne!(s.get(CLUSTER_TYPE).unwrap().version, plain.get(CLUSTER_TYPE).unwrap().version);
    let c = Cluster::decode(clusters[&detour].value.as_slice()).unwrap();
    assert_eq!(c.name, detour);
    let la = c.load_assignment.unwrap();
    assert_eq!(la.cluster_name, detour);
    // Bedrock alone, renumbered to priority 0, named as in the model's own cluster.
    assert_eq!(la.endpoints.len(), 1);
    assert_eq!(la.endpoints[0].priority, 0);
    let meta = endpoint_meta(&la.endpoints[0].lb_endpoints[0]);
    assert_eq!((meta.provider, meta.id.as_str()), (ProviderKind::Bedrock, format!("{}/1", cluster_name("fo")).as_str()));
    let (json, _) = gateway_config(&s);
    let cfg = GatewayConfig::parse(json.as_bytes()).unwrap();
    let fo = cfg.model("fo").unwrap();
    assert_eq!(fo.without, vec![tollgate_contract::config::Detour { providers: vec![ProviderKind::Openai], cluster: detour.clone() }]);
    assert_eq!(fo.cluster_without(&[ProviderKind::Openai]), Some(detour.as_str()));
    assert_eq!(fo.cluster_without(&[ProviderKind::Azure]), Some(cluster_name("fo").as_str()), "not the model's provider");
    assert_eq!(fo.cluster_without(&[ProviderKind::Openai, ProviderKind::Bedrock]), None, "nothing left");
    assert!(cfg.model("gpt").unwrap().without.is_empty());
}

#[test]
fn each_set_of_spent_providers_that_leaves_one_has_its_cluster() {
    let mut m = model();
    with_providers(&mut m, "three", true, &["openai", "bedrock", "anthropic"]);
    let s = build(&m, &env());
    let (json, _) = gateway_config(&s);
    let cfg = GatewayConfig::parse(json.as_bytes()).unwrap();
    let three = cfg.model("three").unwrap();
    // Every non-empty set but all three: 6 clusters.
    assert_eq!(three.without.len(), 6, "{:?}", three.without);
    let both = three.cluster_without(&[ProviderKind::Openai, ProviderKind::Bedrock]).unwrap().to_owned();
    assert_eq!(both, format!("{}_no_bedrock_openai", cluster_name("three")));
    let c = Cluster::decode(s.get(CLUSTER_TYPE).unwrap().items[&both].value.as_slice()).unwrap();
    let la = c.load_assignment.unwrap();
    assert_eq!(la.endpoints.len(), 1, "Anthropic alone");
    assert_eq!(three.cluster_without(&[ProviderKind::Bedrock, ProviderKind::Openai]), Some(both.as_str()), "in any order");
    assert_eq!(three.cluster_without(&[ProviderKind::Openai, ProviderKind::Bedrock, ProviderKind::Anthropic]), None);
}

/// The provider filter's configuration in a cluster (its first upstream HTTP filter).
fn provider_filter_config(c: &Cluster) -> String {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
    let any = c.typed_extension_protocol_options.values().next().unwrap();
    let options = HttpProtocolOptions::decode(any.value.as_slice()).unwrap();
    let Some(ConfigType::TypedConfig(filter)) = &options.http_filters[0].config_type else { panic!("no typed config") };
    let wasm = Wasm::decode(filter.value.as_slice()).unwrap();
    let cfg = wasm.config.unwrap().configuration.unwrap();
    StringValue::decode(cfg.value.as_slice()).unwrap().value
}

#[test]
fn every_cluster_gives_the_provider_filter_the_same_configuration() {
    // The filter makes each stream from the root context it configured last, not from its own
    // cluster's (Envoy does not say which without proxy_on_context_create): a setting that
    // differed per cluster would reach the wrong streams.
    let mut m = model();
    with_providers(&mut m, "multi", true, &["openai", "bedrock"]);
    m.settings.metering = false;
    let s = build(&m, &env());
    let clusters = &s.get(CLUSTER_TYPE).unwrap().items;
    assert!(clusters.len() > 4, "{}", clusters.len());
    let configs: std::collections::BTreeSet<String> =
        clusters.values().map(|a| provider_filter_config(&Cluster::decode(a.value.as_slice()).unwrap())).collect();
    assert_eq!(configs.into_iter().collect::<Vec<_>>(), vec![r#"{"metering_off":true}"#.to_owned()]);
}
