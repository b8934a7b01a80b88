//! Thin tonic glue: one task per ADS stream feeding requests and snapshot changes into the
//! [`AdsState`] machine and writing its responses.

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::ads::{AdsState, Event, Outcome};
use super::snapshot::Snapshot;

pub struct AdsServer {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Envoys connected now (an ADS stream that has named its node).
    envoys: Arc<std::sync::atomic::AtomicUsize>,
}

impl AdsServer {
    pub fn new(snapshots: watch::Receiver<Arc<Snapshot>>, envoys: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        Self { snapshots, envoys }
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn log_events(node: &str, events: &[Event]) {
    for e in events {
        match e {
            Event::Ack { type_url, version } => debug!(node, type_url, version, "xDS ACK"),
            Event::Nack { type_url, version, message } => {
                warn!(node, type_url, version, error = %message, "xDS NACK: Envoy rejected the config and keeps its previous one")
            }
            Event::Stale { type_url } => debug!(node, type_url, "xDS stale request ignored"),
            Event::UnknownType { type_url } => warn!(node, type_url, "xDS request for a type this control plane does not serve"),
        }
    }
}

async fn send_all(tx: &mpsc::Sender<Result<DiscoveryResponse, Status>>, node: &str, out: Outcome) -> bool {
    log_events(node, &out.events);
    for r in out.responses {
        debug!(node, type_url = %r.type_url, version = %r.version_info, resources = r.resources.len(), "xDS push");
        if tx.send(Ok(r)).await.is_err() {
            return false;
        }
    }
    true
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let mut incoming = request.into_inner();
        let mut snapshots = self.snapshots.clone();
        let (tx, rx) = mpsc::channel(16);
        let envoys = self.envoys.clone();
        tokio::spawn(async move {
            let mut state = AdsState::default();
            let mut node = String::from("unknown");
            let mut counted = false;
            loop {
                tokio::select! {
                    msg = incoming.next() => {
                        let req = match msg {
                            Some(Ok(r)) => r,
                            Some(Err(e)) => { info!(node = %node, error = %e, "xDS stream ended"); break; }
                            None => { info!(node = %node, "xDS stream closed by Envoy"); break; }
                        };
                        if let Some(n) = &req.node {
                            if node != n.id {
                                node = n.id.clone();
                                info!(node = %node, "Envoy connected");
                                if !counted {
                                    counted = true;
                                    envoys.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                            }
                        }
                        let snap = snapshots.borrow().clone();
                        if !send_all(&tx, &node, state.on_request(&req, &snap)).await { break; }
                    }
                    changed = snapshots.changed() => {
                        if changed.is_err() { break; }
                        let snap = snapshots.borrow_and_update().clone();
                        if !send_all(&tx, &node, state.on_snapshot(&snap)).await { break; }
                    }
                }
            }
            if counted {
                envoys.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("this control plane serves state-of-the-world ADS; set api_type: GRPC"))
    }
}
