use std::collections::BTreeMap;

use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc::Status;

use super::*;
use crate::xds::snapshot::Resources;

fn snap(version: &str) -> Snapshot {
    let mut s = Snapshot::default();
    for t in PUSH_ORDER {
        let mut items = BTreeMap::new();
        items.insert("a".to_owned(), Any { type_url: t.to_owned(), value: version.as_bytes().to_vec() });
        items.insert("b".to_owned(), Any { type_url: t.to_owned(), value: version.as_bytes().to_vec() });
        s.by_type.insert(t, Resources { version: version.to_owned(), items });
    }
    s
}

fn req(type_url: &str, version: &str, nonce: &str, names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.to_owned(),
        version_info: version.to_owned(),
        response_nonce: nonce.to_owned(),
        resource_names: names.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

#[test]
fn initial_request_gets_everything_for_wildcard() {
    let mut st = AdsState::default();
    let out = st.on_request(&req(CLUSTER_TYPE, "", "", &[]), &snap("v1"));
    assert_eq!(out.responses.len(), 1);
    assert_eq!(out.responses[0].resources.len(), 2);
    assert_eq!(out.responses[0].version_info, "v1");
    assert!(out.events.is_empty());
}

#[test]
fn named_subscription_gets_only_named() {
    let mut st = AdsState::default();
    let out = st.on_request(&req(ROUTE_TYPE, "", "", &["b"]), &snap("v1"));
    assert_eq!(out.responses[0].resources.len(), 1);
}

#[test]
fn ack_sends_nothing_more() {
    let mut st = AdsState::default();
    let s = snap("v1");
    let first = st.on_request(&req(CLUSTER_TYPE, "", "", &[]), &s);
    let nonce = first.responses[0].nonce.clone();
    let out = st.on_request(&req(CLUSTER_TYPE, "v1", &nonce, &[]), &s);
    assert!(out.responses.is_empty());
    assert_eq!(out.events, vec![Event::Ack { type_url: CLUSTER_TYPE.into(), version: "v1".into() }]);
}

#[test]
fn nack_is_reported_and_not_resent() {
    let mut st = AdsState::default();
    let s = snap("v1");
    let nonce = st.on_request(&req(ECDS_TYPE, "", "", &["a"]), &s).responses[0].nonce.clone();
    let mut nack = req(ECDS_TYPE, "", &nonce, &["a"]);
    nack.error_detail = Some(Status { code: 3, message: "bad config".into(), details: vec![] });
    let out = st.on_request(&nack, &s);
    assert!(out.responses.is_empty(), "the NACKed version must not be re-sent");
    assert!(matches!(&out.events[0], Event::Nack { message, version, .. } if message == "bad config" && version == "v1"));
    // a new snapshot is pushed after a NACK
    let out = st.on_snapshot(&snap("v2"));
    assert_eq!(out.responses.len(), 1);
    assert_eq!(out.responses[0].version_info, "v2");
}

#[test]
fn stale_nonce_is_ignored() {
    let mut st = AdsState::default();
    let s1 = snap("v1");
    let n1 = st.on_request(&req(CLUSTER_TYPE, "", "", &[]), &s1).responses[0].nonce.clone();
    let n2 = st.on_snapshot(&snap("v2")).responses[0].nonce.clone();
    assert_ne!(n1, n2);
    // Envoy's ACK of the first response arrives after the second was sent: ignore it.
    let out = st.on_request(&req(CLUSTER_TYPE, "v1", &n1, &[]), &snap("v2"));
    assert!(out.responses.is_empty());
    assert_eq!(out.events, vec![Event::Stale { type_url: CLUSTER_TYPE.into() }]);
    let out = st.on_request(&req(CLUSTER_TYPE, "v2", &n2, &[]), &snap("v2"));
    assert!(out.responses.is_empty());
    assert!(matches!(out.events[0], Event::Ack { .. }));
}

#[test]
fn snapshot_pushes_only_changed_subscribed_types_in_order() {
    let mut st = AdsState::default();
    let s1 = snap("v1");
    for t in [ECDS_TYPE, LISTENER_TYPE, CLUSTER_TYPE] {
        st.on_request(&req(t, "", "", if t == ECDS_TYPE { &["a"] } else { &[] }), &s1);
    }
    assert!(st.on_snapshot(&s1).responses.is_empty());
    let mut s2 = snap("v2");
    s2.by_type.insert(LISTENER_TYPE, s1.by_type[LISTENER_TYPE].clone());
    let out = st.on_snapshot(&s2);
    let types: Vec<_> = out.responses.iter().map(|r| r.type_url.as_str()).collect();
    // ROUTE was never subscribed; LISTENER did not change
    assert_eq!(types, vec![CLUSTER_TYPE, ECDS_TYPE]);
}

#[test]
fn subscription_change_resends() {
    let mut st = AdsState::default();
    let s = snap("v1");
    let n = st.on_request(&req(ROUTE_TYPE, "", "", &["a"]), &s).responses[0].nonce.clone();
    let out = st.on_request(&req(ROUTE_TYPE, "v1", &n, &["a", "b"]), &s);
    assert_eq!(out.responses.len(), 1);
    assert_eq!(out.responses[0].resources.len(), 2);
}

#[test]
fn unknown_type_is_reported() {
    let mut st = AdsState::default();
    let out = st.on_request(&req("type.googleapis.com/x.Y", "", "", &[]), &snap("v1"));
    assert!(out.responses.is_empty());
    assert!(matches!(out.events[0], Event::UnknownType { .. }));
}
