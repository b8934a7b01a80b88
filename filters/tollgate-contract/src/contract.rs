//! The cross-component contract: header names, filter-state keys, metadata namespaces and
//! cluster names shared by the control plane (which writes Envoy config) and the filters.
//! Documented once, here.

/// Request header the gateway filter sets to choose the Envoy cluster of the resolved model
/// (the route uses `cluster_header`). Clients cannot set it: every `x-tollgate-` header a client
/// sends is removed first.
pub const HEADER_CLUSTER: &str = "x-tollgate-cluster";
/// Response header: the cost of a non-streamed answer in USD (nine decimals), from the
/// deployment's catalogue price and the usage the provider reported.
pub const HEADER_COST: &str = "x-tollgate-cost-usd";
/// Test builds only ([`crate::config::GatewayConfigDoc::fault_injection`]): `trap-gateway` makes
/// the gateway filter trap, `trap-provider` the provider filter. Without fault injection it is
/// an internal header like any other and is stripped.
pub const HEADER_FAULT: &str = "x-tollgate-fault";
/// Prefix of every internal header; stripped from client requests.
pub const INTERNAL_HEADER_PREFIX: &str = "x-tollgate-";
/// Prefix of Envoy's control headers; stripped from client requests.
pub const ENVOY_HEADER_PREFIX: &str = "x-envoy-";

/// Filter-state key (written with `set_property([KEY])`, visible as `wasm.KEY`) of everything
/// the gateway filter hands on about a routed request, in one value so that it costs one host
/// call to write and one to read ([`crate::state::RequestState`]): the client operation (saved
/// because the upstream filter rewrites `:path` and the header map is shared by every retry
/// attempt), what the body says that an attempt needs (stream, usage chunk, length), the public
/// id of the virtual key, and the model name the client asked for:
/// `chat_completions;stream;usage;len=2048;key=k1;model=gpt-4o-mini`.
pub const STATE_REQUEST: &str = "tollgate_request";

/// Endpoint metadata namespace and key holding a deployment's [`crate::config::DeploymentMeta`]
/// as a JSON string, read by the provider filter on every attempt through
/// `["xds", "upstream_host_metadata", "filter_metadata", NS, KEY]`.
pub const METADATA_NAMESPACE: &str = "tollgate";
pub const METADATA_DEPLOYMENT_KEY: &str = "deployment";

/// Cluster (in the Envoy bootstrap) through which Envoy reaches the control plane's HTTP port
/// (the built-in demo model).
pub const CONTROL_PLANE_HTTP_CLUSTER: &str = "tollgate_control_plane_http";
/// Cluster (in the Envoy bootstrap) of the control plane's internal listener
/// (`--internal-addr`), which serves [`CREDENTIALS_PATH`] and [`USAGE_PATH`] to the data plane
/// and [`KEY_USAGE_PATH`] to key holders (routed there by the gateway filter).
pub const CONTROL_PLANE_INTERNAL_CLUSTER: &str = "tollgate_control_plane_internal";
/// A key holder's own usage and spend, authenticated by the key itself.
pub const KEY_USAGE_PATH: &str = "/v1/usage";
/// Path of the credential document on the control plane.
pub const CREDENTIALS_PATH: &str = "/internal/v1/credentials";
/// Path of the key table's long poll on the control plane (same listener, same token):
/// `POST` with the service VM's [`crate::keytable::Manifest`], answered with an
/// [`crate::keytable::Update`] of the shards that differ, or 304 after `?wait=` seconds.
pub const KEYS_PATH: &str = "/internal/v1/keys";

/// Where the data plane posts usage batches ([`crate::usage::UsageBatch`]), on the same
/// listener and with the same token.
pub const USAGE_PATH: &str = "/internal/v1/usage";
/// The shared queue (registered by the service VM under [`VM_ID`]) through which the provider
/// filter's workers hand usage records to the service VM: each item is JSON lines, one
/// [`crate::usage::UsageRecord`] a line.
pub const USAGE_QUEUE: &str = "tollgate.usage.v1";
/// Environment variable holding the token the data plane presents to fetch credentials.
/// Envoy passes it into the service VM only (`vm_config.environment_variables.host_env_keys`
/// in the bootstrap), so only its name appears in Envoy's configuration and the filters' VMs
/// never see it.
pub const DATA_PLANE_TOKEN_ENV: &str = "TOLLGATE_DATA_PLANE_TOKEN";
/// Shared-data key where the service VM publishes the credential document it fetched, for the
/// provider filter on every worker (shared data survives VM reloads and configuration changes).
pub const SHARED_CREDENTIALS_KEY: &str = "tollgate.credentials.v1";

/// ECDS resource names of the filter configurations.
pub const ECDS_GATEWAY_FILTER: &str = "tollgate.gateway";
/// The one VM id of every Tollgate wasm module: the gateway filter, the provider filter and
/// the service VM. Wasm shared data (and shared queues) are keyed by VM id for the whole Envoy
/// process, so modules that share it share data: the service VM publishes, the filters read,
/// and later the gateway filter reserves and the provider filter settles on one counter. Each
/// module still runs in its own VM (one per worker), with only its own callbacks exported.
pub const VM_ID: &str = "tollgate";
