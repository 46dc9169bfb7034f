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
    /// Cached prompt tokens, where the provider publishes a price; else they cost `input`.
    pub cached_input: Option<f64>,
    pub output: f64,
}

/// The cost of one settled request; an unknown model costs 0.0 and is marked unpriced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    pub usd: f64,
    pub priced: bool,
}

impl Price {
    /// `input_tokens` counts every prompt token, cached ones included (OpenAI's
    /// `prompt_tokens`; for Anthropic, `input_tokens + cache_read_input_tokens`).
    pub fn cost(&self, input_tokens: u64, cached_input_tokens: u64, output_tokens: u64) -> f64 {
        let cached = cached_input_tokens.min(input_tokens);
        let fresh = (input_tokens - cached) as f64 * self.input;
        let cached = cached as f64 * self.cached_input.unwrap_or(self.input);
        (fresh + cached + output_tokens as f64 * self.output) / 1_000_000.0
    }
}

/// The cost of a request with `price` (as stored on a target), 0.0 unpriced when `None`.
pub fn cost(
    price: Option<&Price>,
    input_tokens: u64,
    cached_input_tokens: u64,
    output_tokens: u64,
) -> Cost {
    match price {
        Some(p) => Cost {
            usd: p.cost(input_tokens, cached_input_tokens, output_tokens),
            priced: true,
        },
        None => Cost {
            usd: 0.0,
            priced: false,
        },
    }
}

#[derive(Debug, Clone)]
pub struct CostTable {
    date: String,
    /// Lower-case model ids, longest first, so the first prefix match is the longest.
    entries: Vec<(String, Price)>,
}

impl CostTable {
    /// The table shipped in the package (`data/prices.json`).
    pub fn bundled() -> Self {
        // The file is ours and a test parses it; an empty table only means unpriced costs.
        Self::from_json(BUNDLED).unwrap_or_else(|_| Self {
            date: String::new(),
            entries: Vec::new(),
        })
    }

    /// `{"date": "...", "models": {"<id>": {"input": .., "output": .., "cached_input": ..}}}`.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let date = v
            .get("date")
            .and_then(Value::as_str)
            .ok_or("missing \"date\"")?
            .to_owned();
        let models = v
            .get("models")
            .and_then(Value::as_object)
            .ok_or("missing \"models\"")?;
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
                    output,
                },
            ));
        }
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Ok(Self { date, entries })
    }

    /// The day the prices were taken (`YYYY-MM-DD`).
    pub fn date(&self) -> &str {
        &self.date
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The price of a provider model id: both overrides win; one override completes the
    /// table's price (or 0.0 for the other side of an unknown model). A dated or suffixed id
    /// matches by longest prefix (`gpt-4o-2024-08-06` is `gpt-4o`), and `vendor/model` ids
    /// are tried without the vendor. An input override drops the table's cached price, so
    /// cached tokens cost the overridden input price.
    pub fn lookup(
        &self,
        model_id: &str,
        override_in: Option<f64>,
        override_out: Option<f64>,
    ) -> Option<Price> {
        let table = self
            .find(model_id)
            .or_else(|| self.find(model_id.rsplit('/').next()?));
        match (table, override_in, override_out) {
            (_, Some(input), Some(output)) => Some(Price {
                input,
                cached_input: None,
                output,
            }),
            (Some(p), Some(input), None) => Some(Price {
                input,
                cached_input: None,
                ..p
            }),
            (Some(p), None, Some(output)) => Some(Price { output, ..p }),
            (None, Some(input), None) => Some(Price {
                input,
                cached_input: None,
                output: 0.0,
            }),
            (None, None, Some(output)) => Some(Price {
                input: 0.0,
                cached_input: None,
                output,
            }),
            (table, None, None) => table,
        }
    }

    fn find(&self, model_id: &str) -> Option<Price> {
        let id = model_id.as_bytes();
        self.entries.iter().find_map(|(name, price)| {
            let n = name.len();
            let prefix = id.len() >= n && id[..n].eq_ignore_ascii_case(name.as_bytes());
            // `gpt-4o` must not price `gpt-4o1`: the prefix ends where a suffix starts.
            let boundary = || matches!(id.get(n), None | Some(b'-' | b'@' | b':'));
            (prefix && boundary()).then_some(*price)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_table_parses_and_is_dated() {
        let t = CostTable::from_json(BUNDLED).unwrap();
        assert!(t.len() >= 40);
        assert_eq!(t.date().len(), 10);
        assert_eq!(CostTable::bundled().len(), t.len());
    }

    #[test]
    fn dated_and_suffixed_ids_match_the_longest_prefix() {
        let t = CostTable::bundled();
        let input = |id: &str| t.lookup(id, None, None).map(|p| p.input);
        assert_eq!(input("gpt-4o"), Some(2.5));
        assert_eq!(input("gpt-4o-2024-08-06"), Some(2.5));
        assert_eq!(input("gpt-4o-mini-2024-07-18"), Some(0.15));
        assert_eq!(input("GPT-4.1-mini"), Some(0.4));
        assert_eq!(input("gpt-4.1-2025-04-14"), Some(2.0));
        assert_eq!(input("o3-mini-2025-01-31"), Some(1.1));
        assert_eq!(input("claude-3-5-sonnet-20241022"), Some(3.0));
        assert_eq!(input("claude-opus-4-20250514"), Some(15.0));
        assert_eq!(input("gemini-1.5-flash-8b-001"), Some(0.0375));
        assert_eq!(input("gemini-2.5-pro-preview-06-05"), Some(1.25));
        assert_eq!(input("mistral-large-latest"), Some(2.0));
        assert_eq!(input("openai/gpt-4o-mini"), Some(0.15));
        assert_eq!(input("llama-3.1-8b-instant"), Some(0.05));
        assert_eq!(input("gpt-4o1"), None, "no match inside a word");
        assert_eq!(input("my-finetune"), None);
    }

    #[test]
    fn overrides_win_over_the_table() {
        let t = CostTable::bundled();
        let both = t.lookup("gpt-4o", Some(1.0), Some(2.0)).unwrap();
        assert_eq!(
            both,
            Price {
                input: 1.0,
                cached_input: None,
                output: 2.0
            }
        );
        let out_only = t.lookup("gpt-4o", None, Some(20.0)).unwrap();
        assert_eq!(
            out_only,
            Price {
                input: 2.5,
                cached_input: Some(1.25),
                output: 20.0
            }
        );
        let unknown = t.lookup("my-finetune", Some(4.0), None).unwrap();
        assert_eq!(
            unknown,
            Price {
                input: 4.0,
                cached_input: None,
                output: 0.0
            }
        );
    }

    #[test]
    fn cost_counts_cached_tokens_at_their_price_and_unknown_models_are_unpriced() {
        let t = CostTable::bundled();
        let p = t.lookup("gpt-4o", None, None);
        // 1000 prompt tokens of which 400 cached, 500 completion tokens.
        let c = cost(p.as_ref(), 1000, 400, 500);
        let want = (600.0 * 2.5 + 400.0 * 1.25 + 500.0 * 10.0) / 1e6;
        assert!(c.priced && (c.usd - want).abs() < 1e-12, "{c:?}");
        let no_cache_price = t.lookup("gpt-3.5-turbo", None, None);
        assert!((cost(no_cache_price.as_ref(), 1000, 1000, 0).usd - 0.0005).abs() < 1e-12);
        assert_eq!(
            cost(None, 1000, 0, 1000),
            Cost {
                usd: 0.0,
                priced: false
            }
        );
    }
}
