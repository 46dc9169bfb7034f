//! Built-in credential patterns: vendor key formats with their fixed prefixes and lengths,
//! PEM private keys, JWTs and `api_key=...`-style assignments.

use super::patterns::Spec;

pub const SPECS: &[Spec] = &[
    Spec {
        category: "AWS_ACCESS_KEY",
        pattern: r"(?-u:\b)(?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA)[0-9A-Z]{16}(?-u:\b)",
        validate: None,
    },
    Spec {
        category: "GITHUB_TOKEN",
        pattern: r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,244})(?-u:\b)",
        validate: None,
    },
    Spec {
        category: "GITLAB_TOKEN",
        pattern: r"(?-u:\b)glpat-[A-Za-z0-9_\-]{20,50}",
        validate: None,
    },
    Spec {
        category: "SLACK_TOKEN",
        pattern: r"(?-u:\b)xox[baprs]-[A-Za-z0-9\-]{10,250}",
        validate: None,
    },
    Spec {
        category: "STRIPE_KEY",
        pattern: r"(?-u:\b)[sr]k_live_[A-Za-z0-9]{20,247}(?-u:\b)",
        validate: None,
    },
    Spec {
        category: "GOOGLE_API_KEY",
        pattern: r"(?-u:\b)AIza[0-9A-Za-z_\-]{35}",
        validate: None,
    },
    Spec {
        category: "ANTHROPIC_API_KEY",
        pattern: r"(?-u:\b)sk-ant-[a-z]{3,8}[0-9]{2}-[A-Za-z0-9_\-]{32,200}",
        validate: None,
    },
    Spec {
        category: "OPENAI_API_KEY",
        // Project, service-account and admin keys carry a dash-separated kind; legacy keys
        // are one alphanumeric run. `sk-ant-...` fits neither, so the two never collide.
        pattern: r"(?-u:\b)sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{20,200}|[A-Za-z0-9]{20,100})(?-u:\b)",
        validate: None,
    },
    Spec {
        category: "PRIVATE_KEY",
        // The header, the base64 lines and the footer; a block cut short (no footer) still
        // loses its body, because the body is the secret.
        pattern: r"-----BEGIN[ A-Z0-9]{0,24} PRIVATE KEY-----(?:[ \t\r\n]{1,4}[A-Za-z0-9+/=]{1,80}){0,64}(?:[ \t\r\n]{1,4}-----END[ A-Z0-9]{0,24} PRIVATE KEY-----)?",
        validate: None,
    },
    Spec {
        category: "JWT",
        pattern: r"(?-u:\b)eyJ[A-Za-z0-9_\-]{5,2000}\.eyJ[A-Za-z0-9_\-]{5,4000}\.[A-Za-z0-9_\-]{10,1000}",
        validate: None,
    },
    Spec {
        category: "GENERIC_SECRET",
        // A credential-named key, `=` or `:`, then a value of 8+ non-space characters; the
        // name may be quoted (JSON, YAML) and prefixed (`db_password`, `X-Api-Key`).
        pattern: r#"(?i)(?-u:\b)[a-z0-9_\-]{0,32}(?:api[_\-]?key|secret|passwd|password|access[_\-]?token|auth[_\-]?token|private[_\-]?key)["']?[ \t]{0,4}[:=][ \t]{0,4}["']?[^\s"',;]{8,200}"#,
        validate: None,
    },
];
