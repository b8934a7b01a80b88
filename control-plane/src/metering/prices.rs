//! The price catalogue: per provider model id (`*` patterns), prices in USD per million input,
//! output, cache-read and cache-write tokens. A default catalogue ships with the project
//! (`control-plane/prices/default.json`, each entry dated with its source); admins add entries
//! at runtime, which come first. Every priced record names the catalogue version it was priced
//! with (a hash of the entries); a model with no entry is unpriced, never $0.
//!
//! Money is integer nano-dollars: a price of `p` USD per million tokens is `p × 1000` nano-USD
//! per token (prices take at most three decimals), so a cost is exact, and the same usage costs
//! the same whether it was streamed or not.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::access::matches;

/// One catalogue entry, as written (decimal strings, so that no price is a float).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    pub provider: String,
    /// The provider's model id, or a `*` pattern.
    pub model: String,
    pub input: String,
    pub output: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<String>,
    /// When the price was read (`YYYY-MM-DD`).
    pub as_of: String,
    #[serde(default)]
    pub source: String,
}

#[derive(Debug, Deserialize)]
struct CatalogueFile {
    entries: Vec<PriceEntry>,
}

/// Nano-USD per token for each kind of token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
}

/// `"2.50"` USD per million tokens → 2500 nano-USD per token. At most three decimals, not
/// negative, less than $10,000,000 per million tokens.
pub fn nanos_per_token(usd_per_million: &str) -> Result<i64, String> {
    let s = usd_per_million.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(frac) || frac.len() > 3 || whole.len() > 7 {
        return Err(format!("price `{usd_per_million}` must be USD per million tokens, at most three decimals (e.g. 2.50)"));
    }
    let whole: i64 = whole.parse().map_err(|_| format!("price `{usd_per_million}` is not a number"))?;
    let frac: i64 = format!("{frac:0<3}").parse().map_err(|_| format!("price `{usd_per_million}` is not a number"))?;
    Ok(whole * 1000 + frac)
}

impl PriceEntry {
    pub fn rates(&self) -> Result<Rates, String> {
        let input = nanos_per_token(&self.input)?;
        // A provider without cache prices bills cached input as input.
        let or_input = |p: &Option<String>| p.as_deref().map_or(Ok(input), nanos_per_token);
        Ok(Rates { input, output: nanos_per_token(&self.output)?, cache_read: or_input(&self.cache_read)?, cache_write: or_input(&self.cache_write)? })
    }
}

/// The entries in force, overrides first, and the version that names them.
#[derive(Debug, Clone)]
pub struct Catalogue {
    entries: Vec<(PriceEntry, Rates)>,
    pub version: String,
}

/// The default catalogue shipped with the project.
pub fn default_entries() -> Vec<PriceEntry> {
    serde_json::from_str::<CatalogueFile>(include_str!("../../prices/default.json")).map(|f| f.entries).unwrap_or_default()
}

impl Catalogue {
    /// Overrides (admin entries, first match wins) before the defaults. An entry whose prices do
    /// not parse is left out (the API refuses such entries when they are set).
    pub fn new(overrides: &[PriceEntry], defaults: &[PriceEntry]) -> Self {
        let entries: Vec<(PriceEntry, Rates)> =
            overrides.iter().chain(defaults).filter_map(|e| Some((e.clone(), e.rates().ok()?))).collect();
        let mut h = Sha256::new();
        for (e, _) in &entries {
            h.update(serde_json::to_vec(e).unwrap_or_default());
            h.update([0]);
        }
        Self { entries, version: hex::encode(&h.finalize()[..6]) }
    }

    /// The rates for a provider's model id, if the catalogue has them.
    pub fn rates(&self, provider: &str, provider_model: &str) -> Option<Rates> {
        self.entries.iter().find(|(e, _)| e.provider == provider && matches(&e.model, provider_model)).map(|(_, r)| *r)
    }
}

/// Token counts of one record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
}

/// The cost in nano-USD (saturating: a record cannot wrap to a small number).
pub fn cost_nanos(r: Rates, t: Tokens) -> i64 {
    let part = |n: u64, rate: i64| i64::try_from(n).unwrap_or(i64::MAX).saturating_mul(rate);
    part(t.input, r.input)
        .saturating_add(part(t.output, r.output))
        .saturating_add(part(t.cache_read, r.cache_read))
        .saturating_add(part(t.cache_write, r.cache_write))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_exact_integers() {
        assert_eq!(nanos_per_token("2.50"), Ok(2500));
        assert_eq!(nanos_per_token("0.075"), Ok(75));
        assert_eq!(nanos_per_token("15"), Ok(15000));
        assert_eq!(nanos_per_token("0"), Ok(0));
        for bad in ["-1", "0.0375", "1e3", "", ".5", "abc", "1.2.3", "99999999"] {
            assert!(nanos_per_token(bad).is_err(), "{bad}");
        }
        // 1,000 input and 500 output tokens of gpt-4o-mini: 1000 × 0.15 + 500 × 0.60 micro-USD.
        let cat = Catalogue::new(&[], &default_entries());
        let r = cat.rates("openai", "gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(cost_nanos(r, Tokens { input: 1000, output: 500, ..Default::default() }), 450_000);
        // the more specific entry comes first
        assert_eq!(cat.rates("openai", "gpt-4o-2024-08-06").unwrap().input, 2500);
    }

    #[test]
    fn the_default_catalogue_parses_whole_and_is_dated() {
        let entries = default_entries();
        assert!(entries.len() >= 20);
        for e in &entries {
            assert!(e.rates().is_ok(), "{e:?}");
            assert!(e.as_of.len() == 10 && e.as_of.as_bytes()[4] == b'-', "{e:?}");
            assert!(!e.source.is_empty(), "{e:?}");
        }
        let cat = Catalogue::new(&[], &entries);
        assert!(cat.rates("bedrock", "us.anthropic.claude-3-5-haiku-20241022-v1:0").is_some());
        assert!(cat.rates("anthropic", "claude-3-5-haiku-20241022").is_some());
        assert_eq!(cat.rates("openai", "some-new-model"), None, "unpriced, never $0");
    }

    #[test]
    fn overrides_come_first_and_change_the_version() {
        let defaults = default_entries();
        let base = Catalogue::new(&[], &defaults);
        let negotiated = PriceEntry {
            provider: "openai".into(),
            model: "gpt-4o*".into(),
            input: "2.00".into(),
            output: "8.00".into(),
            cache_read: None,
            cache_write: None,
            as_of: "2026-12-01".into(),
            source: "contract 42".into(),
        };
        let cat = Catalogue::new(std::slice::from_ref(&negotiated), &defaults);
        assert_eq!(cat.rates("openai", "gpt-4o").unwrap(), Rates { input: 2000, output: 8000, cache_read: 2000, cache_write: 2000 });
        assert_ne!(cat.version, base.version);
        assert_eq!(Catalogue::new(&[], &defaults).version, base.version, "the version is a function of the entries");
    }

    #[test]
    fn costs_saturate_instead_of_wrapping() {
        let r = Rates { input: 1_000_000, ..Default::default() };
        assert_eq!(cost_nanos(r, Tokens { input: u64::MAX, ..Default::default() }), i64::MAX);
    }
}
