//! Small constructors for Envoy protos, so the snapshot builder reads as configuration.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::google::protobuf::{self as pb, Any};
use prost::{Message, Name};

pub fn any<M: Message + Name>(m: &M) -> Any {
    Any { type_url: M::type_url(), value: m.encode_to_vec() }
}

pub fn duration_ms(ms: u64) -> pb::Duration {
    pb::Duration { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}

pub fn u32v(v: u32) -> pb::UInt32Value {
    pb::UInt32Value { value: v }
}

pub fn boolv(v: bool) -> pb::BoolValue {
    pb::BoolValue { value: v }
}

pub fn string_value(s: &str) -> pb::Value {
    pb::Value { kind: Some(pb::value::Kind::StringValue(s.to_owned())) }
}

pub fn strukt(fields: Vec<(&str, pb::Value)>) -> pb::Struct {
    pb::Struct { fields: fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect() }
}

pub fn metadata(ns: Vec<(&str, pb::Struct)>) -> core::Metadata {
    core::Metadata {
        filter_metadata: ns.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        typed_filter_metadata: HashMap::new(),
    }
}

pub fn socket_address(host: &str, port: u16) -> core::Address {
    core::Address {
        address: Some(core::address::Address::SocketAddress(core::SocketAddress {
            address: host.to_owned(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

/// A config source pointing at the ADS stream.
pub fn ads_source() -> core::ConfigSource {
    core::ConfigSource {
        resource_api_version: core::ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(core::AggregatedConfigSource {})),
        ..Default::default()
    }
}

pub fn local_file(path: &str) -> core::AsyncDataSource {
    core::AsyncDataSource {
        specifier: Some(core::async_data_source::Specifier::Local(core::DataSource {
            specifier: Some(core::data_source::Specifier::Filename(path.to_owned())),
            ..Default::default()
        })),
    }
}
