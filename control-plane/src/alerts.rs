//! Quota threshold alerts (issue 13): every few seconds, each quota with thresholds (by default
//! 50, 80 and 100% of a budget) is compared with what the ledger holds against it in its current
//! window; a threshold crossed for the first time in the window is claimed in the database (one
//! row per quota, window and threshold, with its `quota.alert` audit row, in one transaction: of
//! several control-plane replicas exactly one sends it, and a restart does not send it again) and
//! posted to the webhook as Slack-compatible JSON (`{"text": ...}` and the figures), retried with
//! back-off for up to about ten minutes in the background. The webhook URL comes from the
//! environment variable `settings.alerts.webhook_url_env` names, so it is in no database row and
//! no log line.

use std::time::Duration;

use crate::service::Service;
use crate::store::Audit;

/// How often the quotas are compared with the ledger.
const EVERY: Duration = Duration::from_secs(3);
/// Delivery tries, with back-off from 1 s doubling to 60 s (about ten minutes in all).
const TRIES: u32 = 14;

pub fn spawn(service: Service) {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "quota alerts: no HTTP client; alerts are off");
                return;
            }
        };
        let mut warned = false;
        loop {
            tokio::time::sleep(EVERY).await;
            if let Err(e) = check(&service, &client, &mut warned).await {
                tracing::warn!(error = %format!("{e:#}"), "quota alerts: check failed; tried again shortly");
            }
        }
    });
}

async fn check(service: &Service, client: &reqwest::Client, warned: &mut bool) -> anyhow::Result<()> {
    let quotas: Vec<_> = service.store.quotas().await?.into_iter().filter(|q| !q.thresholds().is_empty()).collect();
    if quotas.is_empty() {
        return Ok(());
    }
    let settings = service.store.load_settings().await?;
    let url = settings.alerts.webhook_url_env.as_deref().and_then(|name| std::env::var(name).ok()).filter(|u| !u.is_empty());
    if url.is_none() && !*warned {
        tracing::warn!("quota alerts: no webhook configured (settings.alerts.webhook_url_env); thresholds are recorded in the audit log only");
        *warned = true;
    }
    let now = crate::clock::unix_now();
    for q in quotas {
        let state = service.quota_state_of(&q, now).await?;
        if state.limit == 0 {
            continue;
        }
        let percent = state.used.saturating_mul(100) / state.limit;
        for threshold in q.thresholds().into_iter().filter(|t| u64::from(*t) <= percent) {
            let figures = serde_json::json!({
                "quota": q.id, "metric": q.metric, "threshold_percent": threshold, "used": state.used, "limit": state.limit,
                "window_start": state.window_start, "resets_at": state.resets_at,
                "key_id": q.key_id, "user_id": q.user_id, "team_id": q.team_id, "model": q.model,
            });
            let audit = Audit { at: now, actor: "system", action: "quota.alert", target: &q.id, team_id: q.team_id.as_deref(), source: None, before: None, after: Some(figures.clone()) };
            if !service.store.claim_quota_alert(&q.id, state.window, threshold, &audit).await? {
                continue;
            }
            tracing::info!(quota = %q.id, threshold, used = state.used, limit = state.limit, "quota alert");
            if let Some(url) = url.clone() {
                let text = format!("Tollgate: quota {} has reached {threshold}% ({} of {}{}).", q.id, state.used, state.limit,
                    state.resets_at.as_deref().map(|r| format!("; resets at {r}")).unwrap_or_default());
                let mut body = figures;
                body["text"] = serde_json::Value::String(text);
                tokio::spawn(deliver(client.clone(), url, body));
            }
        }
    }
    Ok(())
}

async fn deliver(client: reqwest::Client, url: String, body: serde_json::Value) {
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=TRIES {
        match client.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => tracing::warn!(status = r.status().as_u16(), attempt, "quota alert: the webhook refused it; retrying"),
            Err(e) => tracing::warn!(error = %e.without_url(), attempt, "quota alert: the webhook did not answer; retrying"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(60));
    }
    tracing::error!(quota = %body["quota"], "quota alert: not delivered after {TRIES} tries; it is in the audit log");
}
