//! Records written as MessagePack by hand: the same bytes as their serde form (a test checks
//! it), at a fraction of the cost (the generic serializer took ~6k instructions a record).

use super::mcp_spans::ToolRun;
use super::record::{Attempt, GuardrailRun, LogPart, Record};
use serde_json::{Map, Value};

/// MessagePack's smallest forms, as `rmp` writes them.
struct Out(Vec<u8>);

impl Out {
    fn nil(&mut self) {
        self.0.push(0xc0);
    }

    fn bool(&mut self, v: bool) {
        self.0.push(if v { 0xc3 } else { 0xc2 });
    }

    fn uint(&mut self, v: u64) {
        let o = &mut self.0;
        if v < 128 {
            o.push(v as u8);
        } else if v <= u64::from(u8::MAX) {
            o.extend_from_slice(&[0xcc, v as u8]);
        } else if v <= u64::from(u16::MAX) {
            o.push(0xcd);
            o.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= u64::from(u32::MAX) {
            o.push(0xce);
            o.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            o.push(0xcf);
            o.extend_from_slice(&v.to_be_bytes());
        }
    }

    fn int(&mut self, v: i64) {
        if v >= 0 {
            return self.uint(v as u64);
        }
        let o = &mut self.0;
        if v >= -32 {
            o.push(v as u8);
        } else if v >= i64::from(i8::MIN) {
            o.extend_from_slice(&[0xd0, v as u8]);
        } else if v >= i64::from(i16::MIN) {
            o.push(0xd1);
            o.extend_from_slice(&(v as i16).to_be_bytes());
        } else if v >= i64::from(i32::MIN) {
            o.push(0xd2);
            o.extend_from_slice(&(v as i32).to_be_bytes());
        } else {
            o.push(0xd3);
            o.extend_from_slice(&v.to_be_bytes());
        }
    }

    fn float(&mut self, v: f64) {
        self.0.push(0xcb);
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    /// A length header: the fixed form below `fix_below`, then (strings only) an 8-bit
    /// length, then 16- and 32-bit lengths (`tags`: 8, 16, 32-bit markers; 0 for none).
    fn len(&mut self, n: usize, fix_below: usize, fix: u8, tags: [u8; 3]) {
        let o = &mut self.0;
        if n < fix_below {
            o.push(fix | n as u8);
        } else if tags[0] != 0 && n <= usize::from(u8::MAX) {
            o.extend_from_slice(&[tags[0], n as u8]);
        } else if let Ok(n) = u16::try_from(n) {
            o.push(tags[1]);
            o.extend_from_slice(&n.to_be_bytes());
        } else {
            o.push(tags[2]);
            o.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }

    fn array(&mut self, n: usize) {
        self.len(n, 16, 0x90, [0, 0xdc, 0xdd]);
    }

    fn str(&mut self, s: &str) {
        self.len(s.len(), 32, 0xa0, [0xd9, 0xda, 0xdb]);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt<T>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match v {
            Some(v) => write(self, v),
            None => self.nil(),
        }
    }

    fn strs(&mut self, items: &[String]) {
        self.array(items.len());
        for s in items {
            self.str(s);
        }
    }

    fn pair(&mut self, p: Option<&(String, String)>) {
        self.opt(p, |o, (a, b)| {
            o.array(2);
            o.str(a);
            o.str(b);
        });
    }

    /// JSON values as serde writes them; records carry strings (metadata values) only, the
    /// rest is for completeness.
    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.nil(),
            Value::Bool(b) => self.bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => self.uint(u),
                (_, Some(i)) => self.int(i),
                _ => self.float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => self.str(s),
            Value::Array(items) => {
                self.array(items.len());
                items.iter().for_each(|i| self.value(i));
            }
            Value::Object(m) => self.map(m),
        }
    }

    fn map(&mut self, m: &Map<String, Value>) {
        self.len(m.len(), 16, 0x80, [0, 0xde, 0xdf]);
        for (k, v) in m {
            self.str(k);
            self.value(v);
        }
    }
}

/// Records as one MessagePack array (a `list[Record]`), each an array of its fields in
/// order, as msgspec writes the Python `Record` (and serde the core's).
pub fn write_array(records: &[Record]) -> Vec<u8> {
    let mut o = Out(Vec::with_capacity(512 * records.len() + 5));
    o.array(records.len());
    records.iter().for_each(|r| record(&mut o, r));
    o.0
}

fn record(o: &mut Out, rec: &Record) {
    o.array(21);
    o.str(&rec.request_id);
    o.uint(rec.start_ns);
    o.uint(rec.end_ns);
    o.str(&rec.method);
    o.str(&rec.route);
    o.uint(rec.status.into());
    o.str(&rec.key_name);
    o.str(&rec.subject);
    o.str(&rec.model);
    o.strs(&rec.rule_ids);
    o.map(&rec.metadata);
    o.str(&rec.traceparent);
    o.array(rec.attempts.len());
    rec.attempts.iter().for_each(|a| attempt(o, a));
    o.str(&rec.error_type);
    o.pair(rec.rate_limit.as_ref());
    o.pair(rec.budget.as_ref());
    o.str(&rec.routing_rule);
    o.array(rec.guardrails.len());
    rec.guardrails.iter().for_each(|g| guardrail(o, g));
    o.strs(&rec.candidates);
    o.array(rec.tools.len());
    rec.tools.iter().for_each(|t| tool(o, t));
    o.opt(rec.log.as_ref(), log_part);
}

fn attempt(o: &mut Out, a: &Attempt) {
    o.array(25);
    o.str(&a.target);
    o.str(&a.provider);
    o.str(&a.request_model);
    o.uint(a.start_ns);
    o.uint(a.end_ns);
    o.uint(a.status.into());
    o.str(&a.error_type);
    o.str(&a.response_model);
    o.str(&a.response_id);
    o.opt(a.input_tokens, Out::int);
    o.opt(a.output_tokens, Out::int);
    o.strs(&a.finish_reasons);
    o.opt(a.ttft_ms, Out::float);
    o.opt(a.itl_mean_ms, Out::float);
    o.opt(a.itl_max_ms, Out::float);
    o.opt(a.cost_usd, Out::float);
    o.uint(a.attempt.into());
    o.str(&a.fallback_reason);
    o.opt(a.temperature, Out::float);
    o.opt(a.max_tokens, Out::int);
    o.opt(a.top_p, Out::float);
    o.bool(a.stream);
    o.opt(a.input_messages.as_deref(), Out::str);
    o.opt(a.output_text.as_deref(), Out::str);
    o.bool(a.usage_estimated);
}

fn guardrail(o: &mut Out, g: &GuardrailRun) {
    o.array(6);
    o.str(&g.name);
    o.str(&g.phase);
    o.str(&g.result);
    o.uint(g.start_ns);
    o.uint(g.end_ns);
    o.strs(&g.categories);
}

fn tool(o: &mut Out, t: &ToolRun) {
    o.array(9);
    o.str(&t.server);
    o.str(&t.method);
    o.str(&t.tool);
    o.uint(t.start_ns);
    o.uint(t.end_ns);
    o.str(&t.error_type);
    o.str(&t.session_id);
    o.opt(t.arguments.as_deref(), Out::str);
    o.opt(t.result.as_deref(), Out::str);
}

fn log_part(o: &mut Out, l: &LogPart) {
    o.array(8);
    o.bool(l.enabled);
    o.int(l.input_tokens);
    o.int(l.cached_tokens);
    o.int(l.output_tokens);
    o.float(l.cost_usd);
    o.bool(l.stream);
    o.opt(l.request_body.as_deref(), Out::str);
    o.opt(l.response_body.as_deref(), Out::str);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_length_form_is_the_serde_form() {
        // Strings across fixstr, str8, str16 and str32; arrays and maps past their fixed
        // forms; integers and floats of each width.
        let mut rec = Record {
            request_id: "r".repeat(31),
            route: "p".repeat(32),
            key_name: "k".repeat(255),
            subject: "s".repeat(256),
            model: "m".repeat(70_000),
            rule_ids: (0..20).map(|i| i.to_string()).collect(),
            start_ns: u64::MAX,
            end_ns: 300,
            status: 65_535,
            ..Record::default()
        };
        rec.metadata = (0..17).map(|i| (i.to_string(), json!("v"))).collect();
        rec.attempts.push(Attempt {
            input_tokens: Some(-33),
            output_tokens: Some(-40_000),
            max_tokens: Some(i64::MIN),
            cost_usd: Some(0.25),
            temperature: Some(-1.5),
            ..Attempt::default()
        });
        let records = vec![rec];
        assert_eq!(write_array(&records), rmp_serde::to_vec(&records).unwrap());
    }
}
