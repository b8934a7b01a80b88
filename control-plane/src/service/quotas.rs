//! Quotas (issue 13): scope × metric × window × limit, defined by platform administrators and
//! pushed to every Envoy with the gateway filter's configuration.

use super::*;
use crate::store::QuotaSpec;

/// The longest window: a year.
const MAX_WINDOW_SECONDS: u64 = 365 * 86_400;

impl Service {
    pub async fn list_quotas(&self, actor: &Actor) -> Result<Vec<QuotaSpec>, ServiceError> {
        Self::check(actor, Verb::Read, Object::Platform).or_else(|_| Self::check(actor, Verb::Write, Object::Platform))?;
        Ok(self.store.quotas().await?)
    }

    pub async fn create_quota(&self, actor: &Actor, mut q: QuotaSpec) -> Result<QuotaSpec, ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        if q.limit == 0 {
            return Err(ServiceError::Invalid("'limit' must be positive.".into()));
        }
        if q.window_seconds > MAX_WINDOW_SECONDS {
            return Err(ServiceError::Invalid("'window_seconds' is at most 31536000 (a year).".into()));
        }
        if q.metric == tollgate_contract::quota::Metric::Concurrency && q.window_seconds != 0 {
            return Err(ServiceError::Invalid("A concurrency quota has no window.".into()));
        }
        if let Some(k) = &q.key_id {
            if self.store.key(k).await?.is_none() {
                return Err(ServiceError::Invalid(format!("No key '{k}'.")));
            }
        }
        if let Some(m) = &q.model {
            if !self.store.model_rows().await?.iter().any(|r| &r.name == m) {
                return Err(ServiceError::Invalid(format!("No model '{m}'.")));
            }
        }
        q.id = new_id("quota");
        q.created_at = unix_now();
        let audit = Audit { after: serde_json::to_value(&q).ok(), ..Self::audit(actor, "quota.create", &q.id, None, q.created_at) };
        self.store.insert_quota(&q, &audit).await?;
        self.publisher.refresh().await?;
        Ok(q)
    }

    pub async fn delete_quota(&self, actor: &Actor, id: &str) -> Result<(), ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        let Some(old) = self.store.quotas().await?.into_iter().find(|q| q.id == id) else {
            return Err(ServiceError::NotFound(format!("No quota '{id}'.")));
        };
        let audit = Audit { before: serde_json::to_value(&old).ok(), ..Self::audit(actor, "quota.delete", id, None, unix_now()) };
        self.store.delete_quota(id, &audit).await?;
        self.publisher.refresh().await?;
        Ok(())
    }
}
