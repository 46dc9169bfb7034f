//! Provider kinds of a `provider-account`: their names, public endpoints, and the account
//! fields only some of them take (cloud regions and credentials). The wire formats themselves
//! are translated in Python (requests, whole answers) and in [`crate::sse`] (streams).

use crate::schema::{Errors, Fields};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    OpenAiCompatible,
    AzureOpenAi,
    Anthropic,
    Gemini,
    Vertex,
    Bedrock,
    Mistral,
    Groq,
    Together,
    Fireworks,
    DeepSeek,
    OpenRouter,
    Vllm,
    Ollama,
    LmStudio,
}

impl Provider {
    pub const NAMES: [&'static str; 16] = [
        "openai",
        "openai-compatible",
        "azure-openai",
        "anthropic",
        "gemini",
        "vertex",
        "bedrock",
        "mistral",
        "groq",
        "together",
        "fireworks",
        "deepseek",
        "openrouter",
        "vllm",
        "ollama",
        "lm-studio",
    ];
    const ALL: [Self; 16] = [
        Self::OpenAi,
        Self::OpenAiCompatible,
        Self::AzureOpenAi,
        Self::Anthropic,
        Self::Gemini,
        Self::Vertex,
        Self::Bedrock,
        Self::Mistral,
        Self::Groq,
        Self::Together,
        Self::Fireworks,
        Self::DeepSeek,
        Self::OpenRouter,
        Self::Vllm,
        Self::Ollama,
        Self::LmStudio,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        let i = Self::NAMES.iter().position(|n| *n == s)?;
        Some(Self::ALL[i])
    }

    pub fn name(self) -> &'static str {
        let i = Self::ALL.iter().position(|p| *p == self).unwrap_or(0);
        Self::NAMES[i]
    }

    /// The endpoint used without a `base_url`: the public API, or the usual local port of a
    /// self-hosted server. `Some("")` means the provider derives it from other account fields
    /// (Vertex from `project` and `region`, Bedrock from the region); `None` that it has none.
    pub fn default_base_url(self) -> Option<&'static str> {
        Some(match self {
            Self::OpenAi => "https://api.openai.com/v1",
            Self::Anthropic => "https://api.anthropic.com/v1",
            Self::Gemini => "https://generativelanguage.googleapis.com/v1beta",
            Self::Mistral => "https://api.mistral.ai/v1",
            Self::Groq => "https://api.groq.com/openai/v1",
            Self::Together => "https://api.together.xyz/v1",
            Self::Fireworks => "https://api.fireworks.ai/inference/v1",
            Self::DeepSeek => "https://api.deepseek.com/v1",
            Self::OpenRouter => "https://openrouter.ai/api/v1",
            Self::Vllm => "http://localhost:8000/v1",
            Self::Ollama => "http://localhost:11434/v1",
            Self::LmStudio => "http://localhost:1234/v1",
            Self::Vertex | Self::Bedrock => "",
            Self::OpenAiCompatible | Self::AzureOpenAi => return None,
        })
    }

    /// Whether an account must give `api_key` (others sign, mint tokens, or run locally).
    pub fn needs_api_key(self) -> bool {
        !matches!(
            self,
            Self::OpenAiCompatible
                | Self::Vertex
                | Self::Bedrock
                | Self::Vllm
                | Self::Ollama
                | Self::LmStudio
        )
    }
}

/// Account fields for cloud providers; empty for the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudAccount {
    /// AWS region (Bedrock) or Google Cloud location (Vertex).
    pub region: Option<String>,
    /// Google Cloud project (Vertex).
    pub project: Option<String>,
    /// A service account key as JSON text (Vertex), usually `${VAR}`.
    pub service_account_json: Option<String>,
    /// A path to a service account key file (Vertex).
    pub service_account_file: Option<String>,
    pub aws_access_key_id: Option<String>,
    pub aws_secret_access_key: Option<String>,
    pub aws_session_token: Option<String>,
    /// A profile of the shared AWS config files.
    pub aws_profile: Option<String>,
}

/// Account fields beyond the common ones; each is accepted only by the providers it names.
pub const CLOUD_FIELDS: [&str; 8] = [
    "region",
    "project",
    "service_account_json",
    "service_account_file",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_profile",
];

/// Reads the cloud fields of an account and checks they suit `provider`.
pub fn parse_cloud(f: &Fields<'_>, provider: Option<Provider>, errs: &mut Errors) -> CloudAccount {
    let c = CloudAccount {
        region: f.string("region", errs),
        project: f.string("project", errs),
        service_account_json: f.string("service_account_json", errs),
        service_account_file: f.string("service_account_file", errs),
        aws_access_key_id: f.string("aws_access_key_id", errs),
        aws_secret_access_key: f.string("aws_secret_access_key", errs),
        aws_session_token: f.string("aws_session_token", errs),
        aws_profile: f.string("aws_profile", errs),
    };
    let Some(p) = provider else {
        return c;
    };
    let allowed: &[&str] = match p {
        Provider::Vertex => &[
            "region",
            "project",
            "service_account_json",
            "service_account_file",
        ],
        Provider::Bedrock => &[
            "region",
            "aws_access_key_id",
            "aws_secret_access_key",
            "aws_session_token",
            "aws_profile",
        ],
        _ => &[],
    };
    for name in CLOUD_FIELDS {
        if f.has(name) && !allowed.contains(&name) {
            errs.push(
                &f.path(name),
                format!("not a field of provider {}", p.name()),
            );
        }
    }
    match p {
        Provider::Vertex => {
            if c.project.is_none() {
                errs.push(&f.path("project"), "required for provider vertex");
            }
            if c.service_account_json.is_some() && c.service_account_file.is_some() {
                errs.push(
                    &f.path("service_account_json"),
                    "give service_account_json or service_account_file, not both",
                );
            }
        }
        Provider::Bedrock if c.aws_access_key_id.is_some() != c.aws_secret_access_key.is_some() => {
            errs.push(
                &f.path("aws_secret_access_key"),
                "aws_access_key_id and aws_secret_access_key go together",
            );
        }
        _ => {}
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_defaults_are_public_or_local() {
        for name in Provider::NAMES {
            let p = Provider::parse(name).expect(name);
            assert_eq!(p.name(), name);
            if let Some(url) = p.default_base_url().filter(|u| !u.is_empty()) {
                assert!(url.starts_with("https://") || url.starts_with("http://localhost:"));
            }
        }
        assert_eq!(Provider::parse("nope"), None);
        assert!(!Provider::Bedrock.needs_api_key() && Provider::Gemini.needs_api_key());
    }
}
