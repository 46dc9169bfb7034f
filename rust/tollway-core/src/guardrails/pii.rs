//! Built-in PII patterns: each is a bounded regex (so a stream knows how much to hold back)
//! plus, where the format has one, a checksum that turns look-alikes into non-matches.

use super::patterns::Spec;
use std::net::Ipv6Addr;

/// `(?-u:\b)` is the ASCII word boundary: the lazy DFA handles it on any input, where the
/// Unicode one makes the regex crate fall back to a slower engine on non-ASCII text. Digits
/// are `[0-9]`, not `\d` (which is every Unicode digit and a much larger automaton).
pub const SPECS: &[Spec] = &[
    Spec {
        category: "EMAIL",
        // Local part and labels are bounded by RFC 5321 lengths; a TLD is required, so
        // `user@localhost` is not an address anyone could be reached at from outside.
        pattern: r"(?-u:\b)[A-Za-z0-9._%+\-]{1,64}@(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,4}[A-Za-z]{2,24}(?-u:\b)",
        validate: None,
    },
    Spec {
        category: "CREDIT_CARD",
        pattern: r"(?-u:\b)(?:[0-9][ \-]?){12,18}[0-9](?-u:\b)",
        validate: Some(card_within),
    },
    Spec {
        category: "US_SSN",
        pattern: r"(?-u:\b)[0-9]{3}[ \-][0-9]{2}[ \-][0-9]{4}(?-u:\b)",
        validate: Some(|t| whole(valid_ssn, t)),
    },
    Spec {
        category: "IBAN",
        pattern: r"(?-u:\b)[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?-u:\b)",
        validate: Some(iban_within),
    },
    Spec {
        category: "PHONE",
        // International: `+`, country code, then 6-14 more digits with the usual separators.
        pattern: r"\+[1-9](?:[ .\-]?\(?[0-9]\)?){6,14}(?-u:\b)",
        validate: Some(|t| whole(phone_digits_7_to_15, t)),
    },
    Spec {
        category: "PHONE",
        // US/Canada: 555-123-4567, (555) 123-4567, 1-555-123-4567; separators are required so
        // an arbitrary 10-digit number (an order id) is not a phone number.
        pattern: r"(?:(?-u:\b)1[ .\-])?(?:\([0-9]{3}\) ?|(?-u:\b)[0-9]{3}[ .\-])[0-9]{3}[ .\-][0-9]{4}(?-u:\b)",
        validate: None,
    },
    Spec {
        category: "PHONE",
        // UK: 020 7946 0958, 0161 496 0000, 07700 900123 (11 digits with a leading 0).
        pattern: r"(?-u:\b)0(?:[0-9]{2} ?[0-9]{4} ?[0-9]{4}|[0-9]{3} ?[0-9]{3} ?[0-9]{4}|[0-9]{4} ?[0-9]{6})(?-u:\b)",
        validate: None,
    },
    Spec {
        category: "PHONE",
        // India: ten digits starting 6-9, often written 98765 43210, with an optional 0.
        pattern: r"(?-u:\b)0?[6-9][0-9]{4}[ \-]?[0-9]{5}(?-u:\b)",
        validate: None,
    },
    Spec {
        category: "PHONE",
        // Germany: area code 0xx-0xxxxx then the subscriber: 030 12345678, 089/1234567.
        pattern: r"(?-u:\b)0[1-9][0-9]{1,4}[ /\-][0-9]{4,8}(?-u:\b)",
        validate: Some(|t| whole(de_phone, t)),
    },
    Spec {
        category: "IP_ADDRESS",
        pattern: r"(?-u:\b)(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?-u:\b)",
        validate: None,
    },
    Spec {
        category: "IP_ADDRESS",
        // The shape finds candidates (times like 10:30:00 fit it); the std parser decides.
        pattern: r"(?-u:\b)(?:[0-9A-Fa-f]{1,4}:){1,7}(?::(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5})?|[0-9A-Fa-f]{1,4})(?-u:\b)",
        validate: Some(|t| whole(valid_ipv6, t)),
    },
];

/// The span of a whole match, if `ok` accepts it.
fn whole(ok: fn(&str) -> bool, s: &str) -> Option<(usize, usize)> {
    ok(s).then_some((0, s.len()))
}

/// Byte spans of the runs between separators (`4111 1111` -> two groups).
fn groups(s: &str, sep: fn(u8) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, b) in s.bytes().enumerate() {
        match (sep(b), start) {
            (true, Some(st)) => {
                out.push((st, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(st) = start {
        out.push((st, s.len()));
    }
    out
}

/// The regex is greedy over digit groups, so a card followed by more numbers
/// (`4111 1111 1111 1111 123-45-6789`) matches as one run; the card is the leftmost, longest
/// run of whole groups that passes Luhn.
pub fn card_within(s: &str) -> Option<(usize, usize)> {
    let g = groups(s, |b| b == b' ' || b == b'-');
    for i in 0..g.len() {
        for j in (i..g.len()).rev() {
            let span = &s[g[i].0..g[j].1];
            if luhn_card(span) {
                return Some((g[i].0, g[j].1));
            }
        }
    }
    None
}

/// The longest prefix of whole groups that is a valid IBAN (trailing numbers are not part
/// of it).
pub fn iban_within(s: &str) -> Option<(usize, usize)> {
    let g = groups(s, |b| b == b' ');
    (0..g.len())
        .rev()
        .map(|j| (0, g[j].1))
        .find(|&(a, b)| valid_iban(&s[a..b]))
}

fn digits(s: &str) -> impl Iterator<Item = u32> + '_ {
    s.chars().filter_map(|c| c.to_digit(10))
}

/// Luhn over 13-19 digits: catches every single-digit typo, so random numbers mostly fail.
pub fn luhn_card(s: &str) -> bool {
    let ds: Vec<u32> = digits(s).collect();
    if !(13..=19).contains(&ds.len()) {
        return false;
    }
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// SSA rules: area 000, 666 and 900-999, group 00 and serial 0000 were never issued.
pub fn valid_ssn(s: &str) -> bool {
    let ds: Vec<u32> = digits(s).collect();
    if ds.len() != 9 {
        return false;
    }
    let area = ds[0] * 100 + ds[1] * 10 + ds[2];
    let group = ds[3] * 10 + ds[4];
    let serial = ds[5..].iter().fold(0, |acc, d| acc * 10 + d);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// ISO 13616: move the first four characters to the end, letters to 10-35, mod 97 must be 1.
pub fn valid_iban(s: &str) -> bool {
    let compact: Vec<u8> = s.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for &b in compact[4..].iter().chain(&compact[..4]) {
        let v = match b {
            b'0'..=b'9' => u32::from(b - b'0'),
            b'A'..=b'Z' => u32::from(b - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn phone_digits_7_to_15(s: &str) -> bool {
    (7..=15).contains(&digits(s).count())
}

fn de_phone(s: &str) -> bool {
    (9..=12).contains(&digits(s).count())
}

fn valid_ipv6(s: &str) -> bool {
    s.parse::<Ipv6Addr>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_accept_real_numbers_and_reject_one_digit_off() {
        assert!(luhn_card("4111 1111 1111 1111"));
        assert!(!luhn_card("4111 1111 1111 1112"));
        assert!(luhn_card("378282246310005"));
        assert!(!luhn_card("411111111111")); // 12 digits: too short for a card
        assert_eq!(card_within("4111 1111 1111 1111 123"), Some((0, 19)));
        assert_eq!(card_within("12 4111-1111-1111-1111"), Some((3, 22)));
        assert_eq!(
            iban_within("DE89 3704 0044 0532 0130 00 1234"),
            Some((0, 27))
        );
        assert!(valid_iban("GB82 WEST 1234 5698 7654 32"));
        assert!(valid_iban("DE89370400440532013000"));
        assert!(!valid_iban("DE89370400440532013001"));
        assert!(valid_ssn("123-45-6789"));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-4567",
            "123-45-0000",
        ] {
            assert!(!valid_ssn(bad), "{bad}");
        }
    }
}
