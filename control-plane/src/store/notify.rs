//! Control-plane replicas on one PostgreSQL: every write commits a `NOTIFY` on
//! [`CHANNEL`] in its own transaction (PostgreSQL delivers it at commit, and only if the
//! transaction commits), and every replica listens and republishes at once. The publisher's
//! periodic reload (every 2 s) stays as the safety net for a notification missed while a
//! replica's listening connection was down. SQLite (one process) needs neither.

use std::sync::Arc;
use std::time::Duration;

use sqlx::{Any, Transaction};

use crate::publisher::Publisher;

pub const CHANNEL: &str = "tollgate_changes";

/// Inside a write's transaction: tells the other replicas when it commits (PostgreSQL only).
pub async fn notify_in(tx: &mut Transaction<'_, Any>, what: &str) -> anyhow::Result<()> {
    if tx.backend_name() == "PostgreSQL" {
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(what).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Listens for other replicas' changes and republishes on each (reconnecting after a second
/// when the connection drops, and republishing then, in case a change came meanwhile).
pub fn spawn_listener(database_url: String, publisher: Arc<Publisher>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match sqlx::postgres::PgListener::connect(&database_url).await {
                Ok(mut listener) => match listener.listen(CHANNEL).await {
                    Ok(()) => {
                        tracing::info!(channel = CHANNEL, "listening for other control planes' changes");
                        refresh(&publisher).await;
                        loop {
                            match listener.recv().await {
                                Ok(n) => {
                                    tracing::debug!(change = n.payload(), "change from a replica");
                                    refresh(&publisher).await;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "change notifications interrupted; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not LISTEN for changes; retrying"),
                },
                Err(e) => tracing::warn!(error = %e, "could not connect to listen for changes; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

async fn refresh(publisher: &Publisher) {
    if let Err(e) = publisher.refresh().await {
        tracing::warn!(error = %format!("{e:#}"), "snapshot refresh after a replica's change failed; keeping the last one");
    }
}
