//! Metering (issue 12): usage records from the data plane become ledger rows priced with the
//! catalogue in force, with the key's owners (user, team) resolved at ingestion, and daily
//! aggregates kept beside them so that spend queries never scan the raw log.
//!
//! Done here: the price catalogue, pricing, the ledger (idempotent by request id and attempt),
//! daily aggregates, the ingestion endpoint and spend queries. Not yet: the filters' side (the
//! provider filter emitting a record per attempt into a shared queue, the service VM batching
//! them to the ingestion endpoint with a bounded buffer), `GET /v1/usage` for key holders, the
//! cost response header and `make accuracy`.

pub mod prices;

use tollgate_contract::usage::UsageRecord;

use prices::{cost_nanos, Catalogue, Tokens};

/// A key's owners, as the ledger records them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owners {
    pub user_id: Option<String>,
    pub team_id: Option<String>,
}

/// A ledger row: the record, its owners and its price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerRow {
    pub record: UsageRecord,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    /// `None`: the catalogue has no price for the model (the row says "unpriced").
    pub cost_nanos: Option<i64>,
    pub price_version: String,
}

/// Prices a batch and resolves each record's owners from the key table as it is now.
pub fn price(records: Vec<UsageRecord>, catalogue: &Catalogue, owners: &std::collections::HashMap<String, Owners>) -> Vec<LedgerRow> {
    records
        .into_iter()
        .map(|record| {
            let tokens = Tokens {
                input: record.input_tokens,
                output: record.output_tokens,
                cache_read: record.cache_read_tokens,
                cache_write: record.cache_write_tokens,
            };
            let cost = catalogue.rates(&record.provider, &record.provider_model).map(|r| cost_nanos(r, tokens));
            let owner = owners.get(&record.key_id).cloned().unwrap_or_default();
            LedgerRow {
                user_id: owner.user_id,
                team_id: owner.team_id,
                cost_nanos: cost,
                price_version: catalogue.version.clone(),
                record,
            }
        })
        .collect()
}

/// Rows deleted by one statement of the retention task.
pub const RETENTION_BATCH: i64 = 10_000;

/// Deletes raw usage records older than `days`, every 10 minutes, in batches of
/// [`RETENTION_BATCH`] with a pause between them (a large backlog never holds the table long).
pub fn spawn_retention(store: crate::store::Store, days: u32) {
    tokio::spawn(async move {
        loop {
            let cutoff = (crate::clock::unix_now() - i64::from(days) * 86_400) * 1000;
            let mut total = 0u64;
            loop {
                match store.delete_usage_before(cutoff, RETENTION_BATCH).await {
                    Ok(n) => {
                        total += n;
                        if n < RETENTION_BATCH as u64 {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "usage retention: deletion failed; retried in 10 minutes");
                        break;
                    }
                }
            }
            if total > 0 {
                tracing::info!(deleted = total, days, "usage retention: raw records past the retention deleted");
            }
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
        }
    });
}

/// Checks a record from the network before it is stored.
pub fn validate(r: &UsageRecord) -> Result<(), String> {
    let text = |v: &str, what: &str, max: usize| {
        if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
            Err(format!("{what} must be 1 to {max} characters without control characters"))
        } else {
            Ok(())
        }
    };
    text(&r.request_id, "request_id", 200)?;
    text(&r.key_id, "key_id", 100)?;
    text(&r.model, "model", 200)?;
    text(&r.provider, "provider", 40)?;
    text(&r.provider_model, "provider_model", 300)?;
    if r.attempt > 1000 {
        return Err("attempt must be at most 1000".into());
    }
    let max = 1u64 << 40;
    if [r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens].iter().any(|t| *t > max) {
        return Err("token counts must be at most 2^40".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_priced_with_their_owners_and_unpriced_models_say_so() {
        let cat = Catalogue::new(&[], &prices::default_entries());
        let mut keys = std::collections::HashMap::new();
        keys.insert("k".to_owned(), Owners { user_id: Some("u".into()), team_id: Some("t".into()) });
        let rec = |provider: &str, model: &str| UsageRecord {
            request_id: "r".into(),
            key_id: "k".into(),
            model: "m".into(),
            provider: provider.into(),
            provider_model: model.into(),
            status: 200,
            input_tokens: 1000,
            output_tokens: 500,
            ..Default::default()
        };
        let rows = price(vec![rec("openai", "gpt-4o-mini"), rec("openai", "brand-new")], &cat, &keys);
        assert_eq!(rows[0].cost_nanos, Some(450_000));
        assert_eq!((rows[0].user_id.as_deref(), rows[0].team_id.as_deref()), (Some("u"), Some("t")));
        assert_eq!(rows[1].cost_nanos, None);
        assert_eq!(rows[0].price_version, cat.version);
        // streamed or not, the same usage costs the same
        let streamed = UsageRecord { stream: true, ..rec("openai", "gpt-4o-mini") };
        assert_eq!(price(vec![streamed], &cat, &keys)[0].cost_nanos, Some(450_000));
        assert!(validate(&rec("openai", "gpt-4o-mini")).is_ok());
        assert!(validate(&UsageRecord { request_id: String::new(), ..rec("openai", "x") }).is_err());
        assert!(validate(&UsageRecord { input_tokens: u64::MAX, ..rec("openai", "x") }).is_err());
    }
}
