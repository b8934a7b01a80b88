//! The pure snapshot builder: `build(&Model, &XdsEnv) -> Snapshot`. Every resource is derived
//! from the model; each type is versioned by the hash of its encoded resources, so an update
//! that does not change a type does not touch it in Envoy. Virtual keys are not in any xDS
//! resource: they travel as the key table (`crate::keytable`, the internal listener's long poll).

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::cluster::v3 as cluster;
use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::endpoint::v3 as endpoint;
use envoy_types::pb::envoy::config::listener::v3 as listener;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::http::upstream_codec::v3::UpstreamCodec;
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
use envoy_types::pb::envoy::extensions::upstreams::http::v3 as upstream_http;
use envoy_types::pb::envoy::extensions::wasm::v3 as wasm;
use envoy_types::pb::google::protobuf::{Any, StringValue};
use prost::Name;
use sha2::{Digest, Sha256};
use tollgate_contract::config::{ContainerPayload, DeploymentMeta, Detour, GatewayConfigDoc, ModelDoc, ProviderConfigDoc, ProviderKind, SCHEMA_VERSION};
use tollgate_contract::contract;

use super::local_reply::local_reply_config;
use super::resources::*;
use crate::model::{Container, Deployment, EdgeSettings, Model, Upstream};
use crate::upstream::UpstreamUrl;

pub const LISTENER_TYPE: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE_TYPE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ECDS_TYPE: &str = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

pub const LISTENER_NAME: &str = "tollgate_gateway";
pub const ROUTE_NAME: &str = "tollgate_routes";
const WASM_RUNTIME: &str = "envoy.wasm.runtime.v8";
/// What Envoy does when a filter's VM fails (a trap): both filters authenticate, authorise or
/// inject credentials, so neither may fail open. `FAIL_RELOAD` answers 503 while a new VM is
/// made (with back-off from 1 s) and then serves again, where `FAIL_CLOSED` would answer 503
/// until Envoy restarts.
const FAILURE_POLICY: wasm::FailurePolicy = wasm::FailurePolicy::FailReload;
const TLS_MATCH_KEY: &str = "tls_host";
const UPSTREAM_IDLE_TIMEOUT_MS: u64 = 60_000;

/// Facts about the environment the snapshot is built for (not part of the stored model).
#[derive(Debug, Clone, serde::Serialize)]
pub struct XdsEnv {
    pub gateway_addr: String,
    pub gateway_port: u16,
    pub gateway_filter_wasm: String,
    pub provider_filter_wasm: String,
    /// Base URL of the built-in demo model (served by the control plane).
    pub demo_url: UpstreamUrl,
    /// CA bundle used to verify providers' TLS certificates.
    pub upstream_ca_file: String,
    /// Certificate chain and private key files (paths as Envoy sees them) for TLS on the client
    /// listener. The listener then accepts TLS and plain HTTP on the same port.
    pub tls: Option<ListenerTls>,
    /// Test stacks only: the filters trap on request (see `GatewayConfigDoc::fault_injection`).
    pub fault_injection: bool,
    /// The ports of this gateway (control plane listeners, Envoy's listener and admin): never a
    /// provider's (`crate::egress`).
    pub own_ports: Vec<u16>,
}

#[cfg(test)]
impl XdsEnv {
    /// The environment tests of the publisher and the admin APIs build snapshots with.
    pub fn for_tests() -> Self {
        Self {
            gateway_addr: "127.0.0.1".into(),
            gateway_port: 8080,
            gateway_filter_wasm: "/w/g.wasm".into(),
            provider_filter_wasm: "/w/p.wasm".into(),
            demo_url: crate::upstream::UpstreamUrl { tls: false, host: "127.0.0.1".into(), port: 8081, base_path: "/demo/v1".into() },
            upstream_ca_file: "/etc/ssl/ca.pem".into(),
            tls: None,
            fault_injection: false,
            own_ports: vec![8080, 8081, 8082, 8083, 18000, 9901],
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ListenerTls {
    pub cert_file: String,
    pub key_file: String,
}

/// The resources of one type, with their version.
#[derive(Debug, Clone)]
pub struct Resources {
    pub version: String,
    /// Resource name → encoded resource.
    pub items: BTreeMap<String, Any>,
}

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub by_type: BTreeMap<&'static str, Resources>,
}

impl Snapshot {
    pub fn get(&self, type_url: &str) -> Option<&Resources> {
        self.by_type.get(type_url)
    }

    /// Two snapshots are the same configuration when every type has the same version.
    pub fn same_versions(&self, other: &Snapshot) -> bool {
        self.by_type.len() == other.by_type.len()
            && self.by_type.iter().all(|(t, r)| other.by_type.get(t).is_some_and(|o| o.version == r.version))
    }
}

/// Builds every resource from the model. It cannot fail: the model holds only what can be
/// served (see `crate::model::resolve`).
pub fn build(model: &Model, env: &XdsEnv) -> Snapshot {
    let mut clusters = BTreeMap::new();
    let mut model_docs = Vec::new();
    // The providers some quota is scoped to.
    let quota_providers = quota_providers(model);
    for m in &model.models {
        let name = cluster_name(&m.name);
        let all: Vec<(usize, &Deployment)> = m.deployments.iter().enumerate().collect();
        clusters.insert(name.clone(), any(&model_cluster(&name, &name, &all, model, env)));
        // The providers, for the gateway filter to make sure of the leases of their quotas
        // (only when there are such quotas: otherwise nothing changes in the pushed config).
        let mut providers: Vec<ProviderKind> = Vec::new();
        let mut without = Vec::new();
        if !quota_providers.is_empty() {
            for d in &m.deployments {
                let kind = target(&d.upstream, env).provider;
                if !providers.contains(&kind) {
                    providers.push(kind);
                }
            }
            // For each set of them that quotas apply to (leaving another provider), the same
            // model without them: where a request goes when its quotas there are spent. At most
            // MAX_DETOUR_PROVIDERS such providers a model (15 clusters); beyond, the first ones.
            let mut limited: Vec<ProviderKind> = providers.iter().copied().filter(|p| quota_providers.contains(p)).collect();
            limited.sort_by_key(|p| p.as_str());
            limited.truncate(MAX_DETOUR_PROVIDERS);
            for mask in 1u32..(1 << limited.len()) {
                let left_out: Vec<ProviderKind> =
                    limited.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, p)| *p).collect();
                let rest: Vec<(usize, &Deployment)> =
                    all.iter().copied().filter(|(_, d)| !left_out.contains(&target(&d.upstream, env).provider)).collect();
                if rest.is_empty() {
                    continue;
                }
                let names: Vec<&str> = left_out.iter().map(|p| p.as_str()).collect();
                let detour = format!("{name}_no_{}", names.join("_"));
                clusters.insert(detour.clone(), any(&model_cluster(&detour, &name, &rest, model, env)));
                without.push(Detour { providers: left_out, cluster: detour });
            }
        }
        model_docs.push(ModelDoc { name: m.name.clone(), cluster: name, owned_by: "tollgate".into(), created: m.created.max(0) as u64, providers, without });
    }
    let gateway_doc = GatewayConfigDoc {
        schema: SCHEMA_VERSION,
        // A reservation never given back (its worker crashed) expires after the longest a
        // request may run.
        quota_hold_seconds: model.settings.request_timeout_seconds.saturating_add(60),
        // A budget reserves a request's worst case at its model's dearest deployment.
        model_prices: model
            .models
            .iter()
            .filter_map(|m| {
                let priced: Vec<_> = m.deployments.iter().filter_map(|d| d.price).collect();
                let max = |f: fn(&tollgate_contract::config::Price) -> u64| priced.iter().map(f).max().unwrap_or(0);
                (!priced.is_empty()).then(|| {
                    let p = tollgate_contract::config::Price { input: max(|p| p.input), output: max(|p| p.output), cache_read: max(|p| p.cache_read), cache_write: max(|p| p.cache_write) };
                    (m.name.clone(), p)
                })
            })
            .collect(),
        quotas: {
            let now = crate::clock::unix_now();
            model.quotas.iter().map(|q| q.doc(model.envoys, model.quota_keys.get(&q.id).cloned(), now)).collect()
        },
        max_body_bytes: model.settings.max_body_bytes,
        models: model_docs,
        fault_injection: env.fault_injection,
    };
    let gateway_json = json_string(&gateway_doc);
    let ecds = any(&gateway_filter_config(&gateway_json, env));
    let s = &model.settings;
    let mut snapshot = Snapshot::default();
    snapshot.by_type.insert(
        LISTENER_TYPE,
        versioned([(LISTENER_NAME.to_owned(), any(&gateway_listener(model, env)))], &(s, env)),
    );
    snapshot.by_type.insert(ROUTE_TYPE, versioned([(ROUTE_NAME.to_owned(), any(&route_config(model)))], s));
    // The detour clusters depend on which providers have quotas.
    snapshot.by_type.insert(CLUSTER_TYPE, versioned(clusters, &(s, env, &model.models, &quota_providers)));
    snapshot.by_type.insert(
        ECDS_TYPE,
        versioned([(contract::ECDS_GATEWAY_FILTER.to_owned(), ecds)], &(env, &gateway_json)),
    );
    snapshot
}

/// The same for every cluster: the filter makes each stream from the root context it configured
/// last, whichever cluster that was (see [`ProviderConfigDoc`]).
fn provider_config_json(env: &XdsEnv, model: &Model) -> String {
    let doc = ProviderConfigDoc { fault_injection: env.fault_injection, metering_off: !model.settings.metering };
    serde_json::to_string(&doc).unwrap_or_else(|_| "{}".to_owned())
}

/// Versions hash the inputs a type is built from, not the encoded protos: prost encodes proto
/// maps in `HashMap` order, so the same config can encode to different bytes.
fn versioned(items: impl IntoIterator<Item = (String, Any)>, inputs: &impl serde::Serialize) -> Resources {
    Resources { version: content_version(&json_bytes(inputs)), items: items.into_iter().collect() }
}

/// The one version scheme of everything the control plane publishes (xDS resources, the
/// credential document): the first 8 bytes of the SHA-256 of the content, in hex.
pub fn content_version(content: &[u8]) -> String {
    hex::encode(&Sha256::digest(content)[..8])
}

/// JSON of a value whose serialization cannot fail. serde_json fails only for a map with
/// non-string keys or a `Serialize` impl that returns an error; the types given here are
/// derived, with string keys. Were it ever to fail, the result is empty: a gateway
/// configuration that the filter refuses (Envoy keeps the last good one), never a panic.
pub fn json_bytes(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn json_string(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// A stable, Envoy-safe cluster name for a model name.
pub fn cluster_name(model: &str) -> String {
    format!("tg_model_{}", hex::encode(&Sha256::digest(model.as_bytes())[..8]))
}

fn gateway_filter_config(config_json: &str, env: &XdsEnv) -> core::TypedExtensionConfig {
    let filter = Wasm {
        config: Some(wasm::PluginConfig {
            name: contract::ECDS_GATEWAY_FILTER.to_owned(),
            configuration: Some(any(&StringValue { value: config_json.to_owned() })),
            allow_on_headers_stop_iteration: Some(boolv(true)),
            failure_policy: FAILURE_POLICY as i32,
            vm: Some(wasm::plugin_config::Vm::VmConfig(wasm::VmConfig {
                vm_id: contract::VM_ID.to_owned(),
                runtime: WASM_RUNTIME.to_owned(),
                code: Some(local_file(&env.gateway_filter_wasm)),
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    core::TypedExtensionConfig { name: contract::ECDS_GATEWAY_FILTER.to_owned(), typed_config: Some(any(&filter)) }
}

fn gateway_listener(model: &Model, env: &XdsEnv) -> listener::Listener {
    let manager = hcm::HttpConnectionManager {
        stat_prefix: "tollgate".to_owned(),
        codec_type: hcm::http_connection_manager::CodecType::Auto as i32,
        route_specifier: Some(hcm::http_connection_manager::RouteSpecifier::Rds(hcm::Rds {
            config_source: Some(ads_source()),
            route_config_name: ROUTE_NAME.to_owned(),
        })),
        http_filters: vec![
            hcm::HttpFilter {
                name: contract::ECDS_GATEWAY_FILTER.to_owned(),
                config_type: Some(hcm::http_filter::ConfigType::ConfigDiscovery(core::ExtensionConfigSource {
                    config_source: Some(ads_source()),
                    type_urls: vec![Wasm::type_url()],
                    ..Default::default()
                })),
                ..Default::default()
            },
            hcm::HttpFilter {
                name: "envoy.filters.http.router".to_owned(),
                config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(&Router::default()))),
                ..Default::default()
            },
        ],
        local_reply_config: Some(local_reply_config()),
        ..edge_settings(&model.settings.edge)
    };
    let hcm_filter = listener::Filter {
        name: "envoy.filters.network.http_connection_manager".to_owned(),
        config_type: Some(listener::filter::ConfigType::TypedConfig(any(&manager))),
    };
    let plain = listener::FilterChain { name: "plain".to_owned(), filters: vec![hcm_filter.clone()], ..Default::default() };
    let (filter_chains, listener_filters) = match &env.tls {
        None => (vec![plain], vec![]),
        Some(t) => {
            let tls_chain = listener::FilterChain {
                name: "tls".to_owned(),
                filter_chain_match: Some(listener::FilterChainMatch {
                    transport_protocol: "tls".to_owned(),
                    ..Default::default()
                }),
                filters: vec![hcm_filter],
                transport_socket: Some(core::TransportSocket {
                    name: "envoy.transport_sockets.tls".to_owned(),
                    config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(&tls::DownstreamTlsContext {
                        common_tls_context: Some(tls::CommonTlsContext {
                            tls_certificates: vec![tls::TlsCertificate {
                                certificate_chain: Some(file_source(&t.cert_file)),
                                private_key: Some(file_source(&t.key_file)),
                                ..Default::default()
                            }],
                            alpn_protocols: vec!["h2".to_owned(), "http/1.1".to_owned()],
                            ..Default::default()
                        }),
                        ..Default::default()
                    }))),
                }),
                ..Default::default()
            };
            let inspector = listener::ListenerFilter {
                name: "envoy.filters.listener.tls_inspector".to_owned(),
                config_type: Some(listener::listener_filter::ConfigType::TypedConfig(any(
                    &envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector::default(),
                ))),
                ..Default::default()
            };
            (vec![tls_chain, plain], vec![inspector])
        }
    };
    listener::Listener {
        name: LISTENER_NAME.to_owned(),
        address: Some(socket_address(&env.gateway_addr, env.gateway_port)),
        // The gateway filter enforces max_body_bytes itself; Envoy's own limit sits above it.
        per_connection_buffer_limit_bytes: Some(u32v(buffer_limit(model))),
        filter_chains,
        listener_filters,
        ..Default::default()
    }
}

/// The client-facing limits of the connection manager, after Envoy's edge best practices (see
/// `EdgeSettings` for what each timeout covers). A long streamed answer is limited only by the
/// route timeout (`request_timeout_seconds`) and by the idle timeout between its bytes.
fn edge_settings(edge: &EdgeSettings) -> hcm::HttpConnectionManager {
    let secs = |s: u64| Some(duration_ms(s.saturating_mul(1000)));
    hcm::HttpConnectionManager {
        request_headers_timeout: secs(edge.request_headers_timeout_seconds),
        request_timeout: secs(edge.request_receive_timeout_seconds),
        stream_idle_timeout: secs(edge.stream_idle_timeout_seconds),
        common_http_protocol_options: Some(core::HttpProtocolOptions {
            idle_timeout: secs(edge.connection_idle_timeout_seconds),
            max_headers_count: Some(u32v(edge.max_headers_count)),
            // `x_tollgate_cluster` must not pass for `x-tollgate-cluster` anywhere downstream.
            headers_with_underscores_action: core::http_protocol_options::HeadersWithUnderscoresAction::RejectRequest as i32,
            ..Default::default()
        }),
        http2_protocol_options: Some(core::Http2ProtocolOptions {
            max_concurrent_streams: Some(u32v(edge.max_concurrent_streams)),
            initial_stream_window_size: Some(u32v(65_536)),
            initial_connection_window_size: Some(u32v(1_048_576)),
            ..Default::default()
        }),
        max_request_headers_kb: Some(u32v(edge.max_request_headers_kb)),
        // Envoy is the edge: the client's address is the peer's, and X-Forwarded-For from the
        // client is not believed beyond the configured trusted hops.
        use_remote_address: Some(boolv(true)),
        xff_num_trusted_hops: edge.xff_num_trusted_hops,
        // `/v1/x/../y` and `//v1//y` are resolved before the filters see the path. Escaped
        // slashes are kept as sent: Bedrock clients percent-encode model ARNs (`%2F`) in the
        // path and the gateway filter decodes that one segment itself; an escaped slash anywhere
        // else leaves an unknown path, which the gateway filter refuses.
        normalize_path: Some(boolv(true)),
        merge_slashes: true,
        path_with_escaped_slashes_action: hcm::http_connection_manager::PathWithEscapedSlashesAction::KeepUnchanged as i32,
        ..Default::default()
    }
}

fn file_source(path: &str) -> core::DataSource {
    core::DataSource { specifier: Some(core::data_source::Specifier::Filename(path.to_owned())), ..Default::default() }
}

fn buffer_limit(model: &Model) -> u32 {
    u32::try_from(model.settings.max_body_bytes.saturating_mul(2).saturating_add(65_536)).unwrap_or(u32::MAX)
}

fn route_config(model: &Model) -> route::RouteConfiguration {
    let retry = route::RetryPolicy {
        retry_on: "connect-failure,refused-stream,reset,retriable-status-codes".to_owned(),
        // Not 502: the provider filter reports a provider's 401/403 as 502, and retrying a
        // credential the provider refused only repeats the refusal.
        retriable_status_codes: vec![429, 500, 503, 504],
        num_retries: Some(u32v(model.settings.num_retries)),
        retry_priority: Some(route::retry_policy::RetryPriority {
            name: "envoy.retry_priorities.previous_priorities".to_owned(),
            config_type: Some(route::retry_policy::retry_priority::ConfigType::TypedConfig(any(
                &envoy_types::pb::envoy::extensions::retry::priority::previous_priorities::v3::PreviousPrioritiesConfig {
                    update_frequency: 1,
                },
            ))),
        }),
        retry_host_predicate: vec![route::retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_owned(),
            config_type: Some(route::retry_policy::retry_host_predicate::ConfigType::TypedConfig(any(
                &envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate::default(),
            ))),
        }],
        host_selection_retry_max_attempts: 3,
        retry_back_off: Some(route::retry_policy::RetryBackOff {
            base_interval: Some(duration_ms(100)),
            max_interval: Some(duration_ms(2_000)),
        }),
        ..Default::default()
    };
    let action = route::RouteAction {
        cluster_specifier: Some(route::route_action::ClusterSpecifier::ClusterHeader(contract::HEADER_CLUSTER.to_owned())),
        timeout: Some(duration_ms(model.settings.request_timeout_seconds.saturating_mul(1000))),
        retry_policy: Some(retry),
        // `:authority` becomes the chosen endpoint's `hostname` (the deployment's authority)
        // natively, so the provider filter, which checks it on every attempt, writes it only
        // when an attempt goes to another host than the router chose first (a host call less
        // an attempt).
        host_rewrite_specifier: Some(route::route_action::HostRewriteSpecifier::AutoHostRewrite(boolv(true))),
        ..Default::default()
    };
    route::RouteConfiguration {
        name: ROUTE_NAME.to_owned(),
        virtual_hosts: vec![route::VirtualHost {
            name: "tollgate".to_owned(),
            domains: vec!["*".to_owned()],
            routes: vec![route::Route {
                name: "models".to_owned(),
                r#match: Some(route::RouteMatch {
                    path_specifier: Some(route::route_match::PathSpecifier::Prefix("/".to_owned())),
                    ..Default::default()
                }),
                request_body_buffer_limit: Some(envoy_types::pb::google::protobuf::UInt64Value { value: u64::from(buffer_limit(model)) }),
                action: Some(route::route::Action::Route(action)),
                // The router drops the internal routing header once it has chosen the cluster,
                // and the client headers that never reach a provider but that SDKs, browsers
                // and load balancers commonly send, before any attempt: the provider filter
                // (which removes whatever else is not on its allow-list) then finds none of
                // them, a host call less each on every attempt.
                request_headers_to_remove: std::iter::once(contract::HEADER_CLUSTER).chain(NEVER_FORWARDED).map(str::to_owned).collect(),
                ..Default::default()
            }],
            // `x-envoy-attempt-count` on each attempt: the provider filter's usage record is
            // keyed by request id and attempt (retries and failovers are records of their own).
            include_request_attempt_count: true,
            ..Default::default()
        }],
        // Routes never depend on a cluster existing at load time (models come and go).
        validate_clusters: Some(boolv(false)),
        ..Default::default()
    }
}

/// Client headers commonly sent (by SDKs, browsers, ALB and CloudFront) that the provider
/// filter's allow-list (`tollgate_provider::sanitize`) never forwards: removed by the router.
const NEVER_FORWARDED: [&str; 8] =
    ["accept-encoding", "cookie", "x-forwarded-for", "x-forwarded-port", "x-forwarded-host", "x-amzn-trace-id", "via", "x-amz-cf-id"];

/// The upstream URL of a deployment and what the provider filter reads of it.
struct Target<'a> {
    url: &'a UpstreamUrl,
    provider: ProviderKind,
    region: Option<&'a str>,
    api_version: Option<&'a str>,
    payload: Option<ContainerPayload>,
    responses_api: bool,
}

fn target<'a>(upstream: &'a Upstream, env: &'a XdsEnv) -> Target<'a> {
    let plain = |url, provider| Target { url, provider, region: None, api_version: None, payload: None, responses_api: false };
    match upstream {
        Upstream::Demo => plain(&env.demo_url, ProviderKind::Openai),
        Upstream::Openai { url, responses_api } => Target { responses_api: *responses_api, ..plain(url, ProviderKind::Openai) },
        Upstream::Anthropic { url } => plain(url, ProviderKind::Anthropic),
        Upstream::Azure { url, api_version } => Target { api_version: Some(api_version), ..plain(url, ProviderKind::Azure) },
        Upstream::Bedrock { url, region } => Target { region: Some(region), ..plain(url, ProviderKind::Bedrock) },
        Upstream::Sagemaker { url, region, container } => Target {
            region: Some(region),
            payload: match container {
                Container::OpenaiChat => None,
                Container::Tgi(prompt_template) => Some(ContainerPayload::Tgi { prompt_template: *prompt_template }),
            },
            ..plain(url, ProviderKind::Sagemaker)
        },
    }
}

/// The most providers of one model that detour clusters are made for (2^4 - 1 sets).
const MAX_DETOUR_PROVIDERS: usize = 4;

/// The providers some quota is scoped to (sorted, each once).
fn quota_providers(model: &Model) -> Vec<ProviderKind> {
    let mut out: Vec<ProviderKind> = model.quotas.iter().filter_map(|q| q.provider).collect();
    out.sort_by_key(|p| p.as_str());
    out.dedup();
    out
}

/// A model's cluster `name` of `deployments` (each with its index in the model, which names it
/// `{ids}/{index}` in every cluster it is in).
fn model_cluster(name: &str, ids: &str, deployments: &[(usize, &Deployment)], model: &Model, env: &XdsEnv) -> cluster::Cluster {
    let mut by_priority: BTreeMap<u32, Vec<endpoint::LbEndpoint>> = BTreeMap::new();
    let mut tls_hosts = std::collections::BTreeSet::new();
    for &(i, d) in deployments {
        let Target { url, provider, region, api_version, payload, responses_api } = target(&d.upstream, env);
        let meta = DeploymentMeta {
            id: format!("{ids}/{i}"),
            provider,
            model: d.model.clone(),
            authority: url.authority(),
            base_path: url.base_path.clone(),
            credential: d.credential.clone(),
            region: region.map(str::to_owned),
            api_version: api_version.map(str::to_owned),
            payload,
            responses_api,
            price: d.price,
        };
        let mut ns = vec![(contract::METADATA_NAMESPACE, strukt(vec![(contract::METADATA_DEPLOYMENT_KEY, string_value(&json_string(&meta)))]))];
        if url.tls {
            tls_hosts.insert(url.host.clone());
            ns.push(("envoy.transport_socket_match", strukt(vec![(TLS_MATCH_KEY, string_value(&url.host))])));
        }
        by_priority.entry(d.priority).or_default().push(endpoint::LbEndpoint {
            metadata: Some(metadata(ns)),
            load_balancing_weight: Some(u32v(d.weight)),
            host_identifier: Some(endpoint::lb_endpoint::HostIdentifier::Endpoint(endpoint::Endpoint {
                address: Some(socket_address(&url.host, url.port)),
                // What `auto_host_rewrite` puts in `:authority`: the same as the provider
                // filter's plan (host, and port unless the scheme's default).
                hostname: url.authority(),
                ..Default::default()
            })),
            ..Default::default()
        });
    }
    // Envoy wants priorities to be contiguous from 0: renumber in order.
    let endpoints = by_priority
        .into_values()
        .enumerate()
        .map(|(p, lb_endpoints)| endpoint::LocalityLbEndpoints { priority: p as u32, lb_endpoints, ..Default::default() })
        .collect();
    let provider_filter = Wasm {
        config: Some(wasm::PluginConfig {
            name: "tollgate.provider".to_owned(),
            configuration: Some(any(&StringValue { value: provider_config_json(env, model) })),
            allow_on_headers_stop_iteration: Some(boolv(true)),
            failure_policy: FAILURE_POLICY as i32,
            vm: Some(wasm::plugin_config::Vm::VmConfig(wasm::VmConfig {
                vm_id: contract::VM_ID.to_owned(),
                runtime: WASM_RUNTIME.to_owned(),
                code: Some(local_file(&env.provider_filter_wasm)),
                ..Default::default()
            })),
            ..Default::default()
        }),
    };
    let protocol = upstream_http::HttpProtocolOptions {
        // Idle provider connections are closed after a minute (Envoy's default is an hour): the
        // pool shrinks back after a burst, and a provider's own idle close is rarely raced.
        common_http_protocol_options: Some(core::HttpProtocolOptions {
            idle_timeout: Some(duration_ms(UPSTREAM_IDLE_TIMEOUT_MS)),
            ..Default::default()
        }),
        upstream_protocol_options: Some(upstream_http::http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
            upstream_http::http_protocol_options::ExplicitHttpConfig {
                protocol_config: Some(
                    upstream_http::http_protocol_options::explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                        core::Http1ProtocolOptions::default(),
                    ),
                ),
            },
        )),
        http_filters: vec![
            hcm::HttpFilter {
                name: "tollgate.provider".to_owned(),
                config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(&provider_filter))),
                ..Default::default()
            },
            hcm::HttpFilter {
                name: "envoy.filters.http.upstream_codec".to_owned(),
                config_type: Some(hcm::http_filter::ConfigType::TypedConfig(any(&UpstreamCodec::default()))),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let transport_socket_matches = tls_hosts
        .into_iter()
        .map(|host| cluster::cluster::TransportSocketMatch {
            name: format!("tls:{host}"),
            r#match: Some(strukt(vec![(TLS_MATCH_KEY, string_value(&host))])),
            transport_socket: Some(core::TransportSocket {
                name: "envoy.transport_sockets.tls".to_owned(),
                config_type: Some(core::transport_socket::ConfigType::TypedConfig(any(&tls::UpstreamTlsContext {
                    sni: host.clone(),
                    common_tls_context: Some(tls::CommonTlsContext {
                        validation_context_type: Some(tls::common_tls_context::ValidationContextType::ValidationContext(
                            tls::CertificateValidationContext {
                                trusted_ca: Some(core::DataSource {
                                    specifier: Some(core::data_source::Specifier::Filename(env.upstream_ca_file.clone())),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        )),
                        ..Default::default()
                    }),
                    ..Default::default()
                }))),
            }),
        })
        .collect();
    let unlimited = cluster::circuit_breakers::Thresholds {
        max_connections: Some(u32v(100_000)),
        max_pending_requests: Some(u32v(100_000)),
        max_requests: Some(u32v(100_000)),
        max_retries: Some(u32v(1_000)),
        ..Default::default()
    };
    cluster::Cluster {
        name: name.to_owned(),
        connect_timeout: Some(duration_ms(5_000)),
        cluster_discovery_type: Some(cluster::cluster::ClusterDiscoveryType::Type(cluster::cluster::DiscoveryType::StrictDns as i32)),
        dns_lookup_family: cluster::cluster::DnsLookupFamily::V4Preferred as i32,
        lb_policy: cluster::cluster::LbPolicy::RoundRobin as i32,
        load_assignment: Some(endpoint::ClusterLoadAssignment { cluster_name: name.to_owned(), endpoints, ..Default::default() }),
        typed_extension_protocol_options: [(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_owned(),
            any(&protocol),
        )]
        .into_iter()
        .collect(),
        transport_socket_matches,
        circuit_breakers: Some(cluster::CircuitBreakers { thresholds: vec![unlimited], ..Default::default() }),
        outlier_detection: Some(cluster::OutlierDetection {
            consecutive_5xx: Some(u32v(5)),
            base_ejection_time: Some(duration_ms(30_000)),
            max_ejection_percent: Some(u32v(100)),
            ..Default::default()
        }),
        per_connection_buffer_limit_bytes: Some(u32v(buffer_limit(model))),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
