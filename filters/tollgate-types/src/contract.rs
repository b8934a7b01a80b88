//! The cross-component contract: header names, filter-state keys, metadata namespaces and
//! cluster names shared by the control plane (which writes Envoy config) and the filters.
//! Documented once, here.

/// Request header the gateway filter sets to choose the Envoy cluster of the resolved model
/// (the route uses `cluster_header`). Clients cannot set it: every `x-tollgate-` header a client
/// sends is removed first.
pub const HEADER_CLUSTER: &str = "x-tollgate-cluster";
/// Prefix of every internal header; stripped from client requests.
pub const INTERNAL_HEADER_PREFIX: &str = "x-tollgate-";
/// Prefix of Envoy's control headers; stripped from client requests.
pub const ENVOY_HEADER_PREFIX: &str = "x-envoy-";

/// Filter-state key (written with `set_property([KEY])`, visible as `wasm.KEY`) of everything
/// the gateway filter hands on about a routed request, in one value so that it costs one host
/// call to write and one to read ([`crate::request::RequestState`]): the client operation (saved
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

/// Cluster (in the Envoy bootstrap) through which the provider filter reaches the control
/// plane's HTTP port to fetch provider credentials (until credential fetching moves to the
/// service VM, which uses [`CONTROL_PLANE_INTERNAL_CLUSTER`]).
pub const CONTROL_PLANE_HTTP_CLUSTER: &str = "tollgate_control_plane_http";
/// Cluster (in the Envoy bootstrap) of the control plane's internal listener
/// (`--internal-addr`), which serves only [`CREDENTIALS_PATH`] to the data plane.
pub const CONTROL_PLANE_INTERNAL_CLUSTER: &str = "tollgate_control_plane_internal";
/// Path of the credential document on the control plane.
pub const CREDENTIALS_PATH: &str = "/internal/v1/credentials";
/// Environment variable holding the token the data plane presents to fetch credentials.
/// Envoy passes it into the wasm VM with `vm_config.environment_variables.host_env_keys`, so
/// only its name appears in Envoy's configuration.
pub const DATA_PLANE_TOKEN_ENV: &str = "TOLLGATE_DATA_PLANE_TOKEN";
/// Shared-data key where the fetched credential document is kept (survives root-context
/// re-creation on config updates).
pub const SHARED_CREDENTIALS_KEY: &str = "tollgate.credentials.v1";

/// ECDS resource names of the filter configurations.
pub const ECDS_GATEWAY_FILTER: &str = "tollgate.gateway";
/// VM ids.
pub const VM_GATEWAY: &str = "tollgate_gateway";
pub const VM_PROVIDER: &str = "tollgate_provider";
