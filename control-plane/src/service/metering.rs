//! Metering through the admin API and the internal listener: prices, usage ingestion, spend.

use super::*;

impl Service {
    /// The catalogue in force: the admin's entries before the shipped defaults.
    pub async fn catalogue(&self) -> Result<crate::metering::prices::Catalogue, ServiceError> {
        let overrides = self.store.price_overrides().await?;
        Ok(crate::metering::prices::Catalogue::new(&overrides, &crate::metering::prices::default_entries()))
    }

    /// A batch of usage records from the data plane: checked, priced, stored once.
    pub async fn ingest_usage(&self, batch: tollgate_contract::usage::UsageBatch) -> Result<tollgate_contract::usage::UsageAck, ServiceError> {
        if batch.records.len() > 50_000 {
            return Err(ServiceError::Invalid("A usage batch holds at most 50,000 records.".into()));
        }
        // A record that fails the checks is refused alone (counted and logged), so that one bad
        // record never holds back a batch the data plane would otherwise retry for ever.
        let mut records = Vec::with_capacity(batch.records.len());
        let mut rejected = 0u64;
        for (i, r) in batch.records.into_iter().enumerate() {
            match crate::metering::validate(&r) {
                Ok(()) => records.push(r),
                Err(e) => {
                    if rejected == 0 {
                        tracing::warn!("usage batch: records[{i}] refused: {e}");
                    }
                    rejected += 1;
                }
            }
        }
        let total = records.len() as u64;
        let mut ids: Vec<&str> = records.iter().map(|r| r.key_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let owners = self.store.key_owners(&ids).await?;
        let rows = crate::metering::price(records, &self.catalogue().await?, &owners);
        let accepted = self.store.ingest(&rows).await?;
        Ok(tollgate_contract::usage::UsageAck { accepted, duplicates: total - accepted, rejected })
    }

    /// `GET /v1/usage`: the presenting key's own spend per day and in total (any active key; a
    /// key sees only itself).
    pub async fn key_usage(&self, secret: &str, from: Option<String>, to: Option<String>) -> Result<serde_json::Value, ServiceError> {
        let now = unix_now();
        let key = self.store.key_by_digest(&tollgate_contract::keys::digest_hex(secret), now).await?;
        let Some(k) = key.filter(|k| k.revoked_at.is_none() && !k.blocked && k.expires_at.is_none_or(|t| now < t)) else {
            return Err(ServiceError::Unauthenticated);
        };
        let q = crate::store::SpendQuery { scope: "key".into(), scope_id: Some(k.id.clone()), from: from.clone(), to: to.clone() };
        let days = self.store.spend(&q).await?;
        let sum = |f: fn(&crate::store::SpendRow) -> i64| days.iter().map(f).sum::<i64>();
        Ok(serde_json::json!({
            "object": "usage",
            "key_id": k.id,
            "from": from,
            "to": to,
            "total": {
                "requests": sum(|d| d.requests),
                "input_tokens": sum(|d| d.input_tokens),
                "output_tokens": sum(|d| d.output_tokens),
                "cache_read_tokens": sum(|d| d.cache_read_tokens),
                "cache_write_tokens": sum(|d| d.cache_write_tokens),
                "cost_usd": crate::store::usd(sum(|d| d.cost_nanos)),
                "unpriced": sum(|d| d.unpriced),
            },
            "data": days,
        }))
    }

    /// Raw usage records: admins and team-less viewers only (they name every tenant's keys).
    pub async fn usage_records(&self, actor: &Actor, q: crate::store::UsageQuery) -> Result<Vec<crate::store::UsageRow>, ServiceError> {
        if !(actor.role == UserRole::Admin || (actor.role == UserRole::Viewer && actor.team_id.is_none())) {
            return Err(ServiceError::Forbidden("Only administrators read raw usage records; use /admin/v1/spend.".into()));
        }
        Ok(self.store.usage_records(&q).await?)
    }

    /// Daily spend of a scope. Admins and team-less viewers see every scope; others see their
    /// team, its users and its keys.
    pub async fn spend(&self, actor: &Actor, q: crate::store::SpendQuery) -> Result<Vec<crate::store::SpendRow>, ServiceError> {
        if !["key", "user", "team", "model", "provider"].contains(&q.scope.as_str()) {
            return Err(ServiceError::Invalid("'scope' must be key, user, team, model or provider.".into()));
        }
        let everything = actor.role == UserRole::Admin || (actor.role == UserRole::Viewer && actor.team_id.is_none());
        if !everything {
            let id = q.scope_id.as_deref().ok_or_else(|| ServiceError::Forbidden("Name the scope_id of your team, one of its users or keys.".into()))?;
            let team = match q.scope.as_str() {
                "team" => Some(id.to_owned()),
                "user" => self.store.user(id).await?.and_then(|u| u.team_id),
                "key" => self.store.key(id).await?.and_then(|k| k.team_id),
                _ => None,
            };
            let own = team.is_some() && team == actor.team_id;
            let member_ok = actor.role != UserRole::Member
                || match q.scope.as_str() {
                    "user" => actor.user_id.as_deref() == Some(id),
                    "key" => self.store.key(id).await?.is_some_and(|k| k.user_id == actor.user_id),
                    _ => false,
                };
            if !own || !member_ok {
                return Err(ServiceError::Forbidden("You may read the spend of your own team, its users and keys only.".into()));
            }
        }
        Ok(self.store.spend(&q).await?)
    }

    pub async fn list_prices(&self, actor: &Actor) -> Result<serde_json::Value, ServiceError> {
        Self::check(actor, Verb::Read, Object::Models)?;
        let overrides = self.store.price_overrides().await?;
        let catalogue = self.catalogue().await?;
        Ok(serde_json::json!({
            "version": catalogue.version,
            "overrides": overrides,
            "defaults": crate::metering::prices::default_entries(),
        }))
    }

    pub async fn add_price(&self, actor: &Actor, entry: crate::metering::prices::PriceEntry) -> Result<serde_json::Value, ServiceError> {
        Self::check(actor, Verb::Write, Object::Platform)?;
        entry.rates().map_err(ServiceError::Invalid)?;
        if entry.provider.is_empty() || entry.model.is_empty() || entry.as_of.len() != 10 {
            return Err(ServiceError::Invalid("'provider', 'model' and 'as_of' (YYYY-MM-DD) are required.".into()));
        }
        let now = unix_now();
        let target = format!("{}:{}", entry.provider, entry.model);
        let audit = Audit { after: serde_json::to_value(&entry).ok(), ..Self::audit(actor, "price.create", &target, None, now) };
        self.store.add_price(&entry, now, &audit).await?;
        // The data plane prices non-streamed answers for the client with the new rates.
        self.publisher.refresh().await?;
        Ok(serde_json::json!({"version": self.catalogue().await?.version, "entry": entry}))
    }
}
