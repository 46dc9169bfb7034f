//! The cost of a request in USD, from the bundled price table or a per-model override.
//!
//! Prices are looked up once per target when the engine is compiled, so settling a request
//! is three multiplications.

use serde_json::Value;

const BUNDLED: &str = include_str!("../../data/prices.json");

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    pub input: f64,
    /// Cached prompt tokens read, where the provider publishes a price; else they cost `input`.
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the cache (Anthropic's cache creation), where the provider
    /// bills them apart; else they cost `input`.
    pub cache_write: Option<f64>,
    pub output: f64,
}

/// The cost of one settled request; an unknown model costs 0.0 and is marked unpriced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub usd: f64,
    pub priced: bool,
}

impl Price {
    /// A price without cache rates: cache tokens cost `input`.
    pub fn plain(input: f64, output: f64) -> Self {
        Self {
            input,
            cached_input: None,
            cache_write: None,
            output,
        }
    }

    /// `input_tokens` counts every prompt token, cached and cache-written ones included
    /// (OpenAI's `prompt_tokens`; for Anthropic, `input_tokens + cache_read_input_tokens +
    /// cache_creation_input_tokens`). `output_tokens` includes reasoning tokens, which every
    /// provider bills at the output rate.
    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        let cached = usage.cached_input.min(usage.input);
        let written = usage.cache_write.min(usage.input - cached);
        let fresh = (usage.input - cached - written) as f64 * self.input;
        let cached = cached as f64 * self.cached_input.unwrap_or(self.input);
        let written = written as f64 * self.cache_write.unwrap_or(self.input);
        (fresh + cached + written + usage.output as f64 * self.output) / 1_000_000.0
    }
}

/// Tokens of one answer as `Price::cost` bills them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Every prompt token, cached and cache-written ones included.
    pub input: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub output: u64,
}

impl TokenUsage {
    pub fn new(input: u64, cached_input: u64, output: u64) -> Self {
        Self {
            input,
            cached_input,
            cache_write: 0,
            output,
        }
    }
}

/// The cost of a request with `price` (as stored on a target), 0.0 unpriced when `None`.
pub fn cost(price: Option<&Price>, usage: &TokenUsage) -> Cost {
    match price {
        Some(p) => Cost {
            usd: p.cost(usage),
            priced: true,
        },
        None => Cost {
            usd: 0.0,
            priced: false,
        },
    }
}

/// Lower-case model ids and their prices, longest first, so the first prefix match is the
/// longest.
type Entries = Vec<(String, Price)>;

#[derive(Debug, Clone)]
pub struct CostTable {
    date: String,
    source: String,
    /// First-party model ids (OpenAI, Anthropic, Gemini, Mistral, ...), for every provider.
    entries: Entries,
    /// Per gateway provider (`bedrock`, `groq`, `openrouter`, ...): ids or prices of its own,
    /// searched before `entries` for that provider's targets.
    hosted: Vec<(String, Entries)>,
}

impl CostTable {
    /// The table shipped in the package (`data/prices.json`, made by `scripts/update-prices`).
    pub fn bundled() -> Self {
        // The file is ours and a test parses it; an empty table only means unpriced costs.
        Self::from_json(BUNDLED).unwrap_or_else(|_| Self {
            date: String::new(),
            source: String::new(),
            entries: Vec::new(),
            hosted: Vec::new(),
        })
    }

    /// `{"date": "...", "models": {"<id>": {"input": .., "output": .., "cached_input": ..,
    /// "cache_write": ..}}, "providers": {"<provider>": {"<id>": {..}}}}`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let date = v
            .get("date")
            .and_then(Value::as_str)
            .ok_or("missing \"date\"")?
            .to_owned();
        let source = v.get("source").and_then(Value::as_str).unwrap_or("");
        let models = v.get("models").ok_or("missing \"models\"")?;
        let entries = entries_of(models)?;
        let mut hosted = Vec::new();
        if let Some(providers) = v.get("providers").and_then(Value::as_object) {
            for (name, table) in providers {
                let list = entries_of(table).map_err(|e| format!("providers.{name}.{e}"))?;
                hosted.push((name.clone(), list));
            }
        }
        Ok(Self {
            date,
            source: source.to_owned(),
            entries,
            hosted,
        })
    }

    /// The day the prices were taken (`YYYY-MM-DD`).
    pub fn date(&self) -> &str {
        &self.date
    }

    /// Where the prices come from (package and version).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Entries in all tables.
    pub fn len(&self) -> usize {
        self.entries.len() + self.hosted.iter().map(|(_, t)| t.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every `(provider, model id, price)` in the table; the provider is empty for the
    /// first-party table.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Price)> {
        let first = self.entries.iter().map(|(id, p)| ("", id.as_str(), p));
        let hosted = self.hosted.iter().flat_map(|(provider, table)| {
            table
                .iter()
                .map(move |(id, p)| (provider.as_str(), id.as_str(), p))
        });
        first.chain(hosted)
    }

    /// [`Self::lookup_for`] without a provider table.
    pub fn lookup(
        &self,
        model_id: &str,
        override_in: Option<f64>,
        override_out: Option<f64>,
    ) -> Option<Price> {
        self.lookup_for("", model_id, override_in, override_out)
    }

    /// The price of a provider model id: both overrides win; one override completes the
    /// table's price (or 0.0 for the other side of an unknown model). The provider's own table
    /// is searched first, then the first-party one. A dated or suffixed id matches by longest
    /// prefix (`gpt-4o-2024-08-06` is `gpt-4o`), and `vendor/model` and Bedrock's
    /// `region.vendor.model` ids are tried without the qualifiers. An input override drops the table's cache prices, so cached and cache-written
    /// tokens cost the overridden input price.
    pub fn lookup_for(
        &self,
        provider: &str,
        model_id: &str,
        override_in: Option<f64>,
        override_out: Option<f64>,
    ) -> Option<Price> {
        let own = self
            .hosted
            .iter()
            .find(|(name, _)| name == provider)
            .map(|(_, t)| t);
        let find = |id: &str| {
            own.and_then(|t| find(t, id))
                .or_else(|| find(&self.entries, id))
        };
        let table = find(model_id)
            .or_else(|| find(model_id.rsplit('/').next()?))
            .or_else(|| find(without_qualifiers(model_id)?));
        match (table, override_in, override_out) {
            (_, Some(input), Some(output)) => Some(Price::plain(input, output)),
            (Some(p), Some(input), None) => Some(Price::plain(input, p.output)),
            (Some(p), None, Some(output)) => Some(Price { output, ..p }),
            (None, Some(input), None) => Some(Price::plain(input, 0.0)),
            (None, None, Some(output)) => Some(Price::plain(0.0, output)),
            (table, None, None) => table,
        }
    }
}

fn entries_of(models: &Value) -> Result<Entries, String> {
    let models = models.as_object().ok_or("models must be an object")?;
    let mut entries = Vec::with_capacity(models.len());
    for (id, m) in models {
        let num = |k: &str| m.get(k).and_then(Value::as_f64).filter(|n| *n >= 0.0);
        let (Some(input), Some(output)) = (num("input"), num("output")) else {
            return Err(format!("{id}: needs non-negative input and output prices"));
        };
        entries.push((
            id.to_ascii_lowercase(),
            Price {
                input,
                cached_input: num("cached_input"),
                cache_write: num("cache_write"),
                output,
            },
        ));
    }
    entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
    Ok(entries)
}

/// `us.anthropic.claude-...` without its all-letter `region.` and `vendor.` segments; `None`
/// when there are none.
fn without_qualifiers(model_id: &str) -> Option<&str> {
    let mut rest = model_id;
    while let Some((head, tail)) = rest.split_once('.') {
        if head.is_empty() || !head.bytes().all(|b| b.is_ascii_alphabetic()) {
            break;
        }
        rest = tail;
    }
    (rest.len() < model_id.len()).then_some(rest)
}

fn find(entries: &Entries, model_id: &str) -> Option<Price> {
    let id = model_id.as_bytes();
    entries.iter().find_map(|(name, price)| {
        let n = name.len();
        let prefix = id.len() >= n && id[..n].eq_ignore_ascii_case(name.as_bytes());
        // `gpt-4o` must not price `gpt-4o1`: the prefix ends where a suffix starts.
        let boundary = || matches!(id.get(n), None | Some(b'-' | b'@' | b':'));
        (prefix && boundary()).then_some(*price)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_table_parses_and_is_dated_and_sourced() {
        let t = CostTable::from_json(BUNDLED).unwrap();
        assert!(t.len() >= 500);
        assert_eq!(t.date().len(), 10);
        assert!(t.source().starts_with("genai-prices "), "{}", t.source());
        assert_eq!(CostTable::bundled().len(), t.len());
    }

    #[test]
    fn every_model_in_the_table_resolves_to_its_own_price() {
        let t = CostTable::bundled();
        for (provider, id, price) in t.iter() {
            assert_eq!(
                t.lookup_for(provider, id, None, None).as_ref(),
                Some(price),
                "{provider}/{id}"
            );
        }
    }

    #[test]
    fn every_provider_the_gateway_speaks_has_prices() {
        let t = CostTable::bundled();
        let priced = |provider: &str, id: &str| t.lookup_for(provider, id, None, None).is_some();
        for (provider, id) in [
            ("openai", "gpt-4o-2024-08-06"),
            ("azure-openai", "gpt-4o"),
            ("anthropic", "claude-sonnet-4-20250514"),
            ("gemini", "gemini-2.5-flash"),
            ("vertex", "gemini-2.5-pro"),
            ("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
            ("mistral", "mistral-large-latest"),
            ("groq", "llama-3.1-8b-instant"),
            ("together", "meta-llama/Llama-3.3-70B-Instruct-Turbo"),
            (
                "fireworks",
                "accounts/fireworks/models/llama-v3p1-8b-instruct",
            ),
            ("deepseek", "deepseek-chat"),
            ("openrouter", "openai/gpt-4o-mini"),
        ] {
            assert!(priced(provider, id), "{provider}: {id} has no price");
        }
    }

    #[test]
    fn dated_and_suffixed_ids_match_the_longest_prefix() {
        let t = CostTable::bundled();
        let input = |id: &str| t.lookup(id, None, None).map(|p| p.input);
        assert_eq!(input("gpt-4o"), Some(2.5));
        assert_eq!(input("gpt-4o-2024-08-06"), Some(2.5));
        assert_eq!(input("gpt-4o-mini-2024-07-18"), Some(0.15));
        assert_eq!(input("GPT-4.1-mini"), Some(0.4));
        assert_eq!(input("claude-3-5-sonnet-20241022"), Some(3.0));
        assert_eq!(input("openai/gpt-4o-mini"), Some(0.15));
        assert_eq!(input("gpt-4o1"), None, "no match inside a word");
        assert_eq!(input("my-finetune"), None);
    }

    #[test]
    fn overrides_win_over_the_table() {
        let t = CostTable::bundled();
        let both = t.lookup("gpt-4o", Some(1.0), Some(2.0)).unwrap();
        assert_eq!(both, Price::plain(1.0, 2.0));
        let out_only = t.lookup("gpt-4o", None, Some(20.0)).unwrap();
        assert_eq!((out_only.input, out_only.output), (2.5, 20.0));
        assert_eq!(out_only.cached_input, Some(1.25));
        let unknown = t.lookup("my-finetune", Some(4.0), None).unwrap();
        assert_eq!(unknown, Price::plain(4.0, 0.0));
        let hosted = t.lookup_for("bedrock", "my-finetune", Some(1.0), Some(1.0));
        assert_eq!(hosted, Some(Price::plain(1.0, 1.0)));
    }

    #[test]
    fn cache_tokens_are_billed_at_their_own_rates() {
        let t = CostTable::bundled();
        // OpenAI: 1000 prompt tokens of which 400 cached, 500 completion (reasoning included).
        let p = t.lookup_for("openai", "gpt-4o", None, None).unwrap();
        let c = cost(Some(&p), &TokenUsage::new(1000, 400, 500));
        let want = (600.0 * 2.5 + 400.0 * 1.25 + 500.0 * 10.0) / 1e6;
        assert!(c.priced && (c.usd - want).abs() < 1e-12, "{c:?}");
        // Anthropic: 100 fresh input, 2000 cache reads, 1000 cache writes, 50 output.
        let p = t.lookup_for("anthropic", "claude-3-5-sonnet-20241022", None, None);
        let p = p.unwrap();
        assert_eq!((p.cached_input, p.cache_write), (Some(0.3), Some(3.75)));
        let usage = TokenUsage {
            input: 3100,
            cached_input: 2000,
            cache_write: 1000,
            output: 50,
        };
        let want = (100.0 * 3.0 + 2000.0 * 0.3 + 1000.0 * 3.75 + 50.0 * 15.0) / 1e6;
        assert!((p.cost(&usage) - want).abs() < 1e-12);
        // Gemini: cached content tokens at the cached rate.
        let p = t
            .lookup_for("gemini", "gemini-2.5-flash", None, None)
            .unwrap();
        let cached = p.cached_input.unwrap();
        assert!(cached < p.input);
        let want = (200.0 * p.input + 800.0 * cached + 10.0 * p.output) / 1e6;
        assert!((p.cost(&TokenUsage::new(1000, 800, 10)) - want).abs() < 1e-12);
        // Without published cache rates, cache tokens cost the input price.
        let plain = Price::plain(1.0, 2.0);
        let usage = TokenUsage {
            input: 1000,
            cached_input: 500,
            cache_write: 500,
            output: 0,
        };
        assert!((plain.cost(&usage) - 0.001).abs() < 1e-12);
        assert_eq!(
            cost(None, &TokenUsage::new(1000, 0, 1000)),
            Cost {
                usd: 0.0,
                priced: false
            }
        );
    }
}
