//! Entity keys: which bucket or budget a request counts against, as a 64-bit id.
//!
//! The id is SHA-256 of the key parts, truncated: no string is built per request, the same
//! parts give the same id in every replica and every build (Redis keys rely on that), and a
//! client cannot craft a metadata value that lands in another project's bucket.

use super::config::KeyPart;
use super::RequestFacts;
use sha2::{Digest, Sha256};

/// The value a part takes for a request; `None` is the part's own "missing" value.
pub fn part_value<'a>(part: &KeyPart, facts: &RequestFacts<'a>) -> Option<&'a str> {
    match part {
        KeyPart::User => facts.subject.strip_prefix("user:"),
        KeyPart::VirtualAccount => facts.subject.strip_prefix("virtualaccount:"),
        KeyPart::Model => Some(facts.model),
        KeyPart::Metadata(key) => facts
            .metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str()),
    }
}

/// The entity id of a request under `parts`; with no parts, every request shares id 0.
pub fn entity_key(parts: &[KeyPart], facts: &RequestFacts<'_>) -> u64 {
    if parts.is_empty() {
        return 0;
    }
    let mut h = Sha256::new();
    for part in parts {
        match part_value(part, facts) {
            // Length-prefixed so ("ab", "c") and ("a", "bc") differ, tagged so a missing
            // value never equals any present one (not even "").
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u64).to_le_bytes());
                h.update(v.as_bytes());
            }
            None => h.update([0]),
        }
    }
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

/// A readable name for an entity (`user=alice,metadata.project=x`), for logs and metrics;
/// it allocates, so it is not for the request path.
pub fn entity_label(parts: &[KeyPart], facts: &RequestFacts<'_>) -> String {
    let mut out = String::new();
    for part in parts {
        if !out.is_empty() {
            out.push(',');
        }
        match part {
            KeyPart::User => out.push_str("user="),
            KeyPart::VirtualAccount => out.push_str("virtualaccount="),
            KeyPart::Model => out.push_str("model="),
            KeyPart::Metadata(k) => {
                out.push_str("metadata.");
                out.push_str(k);
                out.push('=');
            }
        }
        out.push_str(part_value(part, facts).unwrap_or("(missing)"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(
        subject: &'a str,
        model: &'a str,
        meta: &'a [(String, String)],
    ) -> RequestFacts<'a> {
        RequestFacts {
            subject,
            model,
            metadata: meta,
            tool: None,
        }
    }

    #[test]
    fn keys_depend_only_on_the_listed_parts() {
        let meta = vec![
            ("p".to_owned(), "1".to_owned()),
            ("q".to_owned(), "x".to_owned()),
        ];
        let other = vec![
            ("p".to_owned(), "2".to_owned()),
            ("q".to_owned(), "x".to_owned()),
        ];
        let user = [KeyPart::User];
        let p = [KeyPart::Metadata("p".into())];
        let both = [KeyPart::Metadata("p".into()), KeyPart::Model];
        assert_eq!(
            entity_key(&user, &facts("user:a", "m1", &meta)),
            entity_key(&user, &facts("user:a", "m2", &other))
        );
        assert_ne!(
            entity_key(&user, &facts("user:a", "m", &meta)),
            entity_key(&user, &facts("user:b", "m", &meta))
        );
        assert_ne!(
            entity_key(&p, &facts("user:a", "m", &meta)),
            entity_key(&p, &facts("user:a", "m", &other))
        );
        assert_ne!(
            entity_key(&both, &facts("user:a", "m1", &meta)),
            entity_key(&both, &facts("user:a", "m2", &meta))
        );
        assert_eq!(entity_key(&[], &facts("user:a", "m1", &meta)), 0);
    }

    #[test]
    fn a_missing_value_has_its_own_key() {
        let empty = vec![("p".to_owned(), String::new())];
        let p = [KeyPart::Metadata("p".into())];
        let missing = entity_key(&p, &facts("user:a", "m", &[]));
        assert_eq!(missing, entity_key(&p, &facts("user:b", "m2", &[])));
        assert_ne!(missing, entity_key(&p, &facts("user:a", "m", &empty)));
        // A team is not a user: all teams share the user part's missing value.
        let user = [KeyPart::User];
        assert_eq!(
            entity_key(&user, &facts("team:a", "m", &[])),
            entity_key(&user, &facts("team:b", "m", &[]))
        );
        assert_eq!(
            entity_label(&[KeyPart::User, KeyPart::Model], &facts("team:a", "m", &[])),
            "user=(missing),model=m"
        );
    }
}
