//! The request head: the headers the gateway reads, picked out of the ASGI list in one pass
//! (a Python loop over a dozen headers cost more than the rest of the head's work).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tollway_core::clock::Rng;

/// Request ids made for requests that bring none: reseeded at import and in each forked
/// worker (`reseed_request_ids`, registered with `os.register_at_fork`).
static REQUEST_IDS: Rng = Rng::new(0);

/// How many headers `read_head` returns, in this order: authorization, content-length,
/// x-tfy-metadata, x-request-id, x-tfy-request-timeout, x-tfy-ttft-timeout-ms, traceparent,
/// x-tfy-guardrails, x-tfy-cache-config, x-tfy-logging-config.
const READ: usize = 10;
const REQUEST_ID: usize = 3;
/// A client's request id is echoed only when it is this short and printable ASCII.
const MAX_REQUEST_ID: usize = 128;

/// The slot of a header name (names arrive lowercased from the server).
fn slot(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"authorization" => 0,
        b"content-length" => 1,
        b"x-tfy-metadata" => 2,
        b"x-request-id" => REQUEST_ID,
        b"x-tfy-request-timeout" => 4,
        b"x-tfy-ttft-timeout-ms" => 5,
        b"traceparent" => 6,
        b"x-tfy-guardrails" => 7,
        b"x-tfy-cache-config" => 8,
        b"x-tfy-logging-config" => 9,
        _ => return None,
    })
}

fn usable_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID && id.iter().all(|b| (33..127).contains(b))
}

/// The values of the headers the gateway reads (see `READ`; None when absent, the last one
/// when repeated); the client's x-request-id only when it may be echoed.
#[pyfunction]
fn read_head<'py>(headers: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
    let py = headers.py();
    let mut found: [Option<Bound<'py, PyAny>>; READ] = Default::default();
    let mut take = |pair: Bound<'py, PyAny>| -> PyResult<()> {
        let (name, value): (Bound<'py, PyBytes>, Bound<'py, PyAny>) = pair.extract()?;
        if let Some(i) = slot(name.as_bytes()) {
            found[i] = Some(value);
        }
        Ok(())
    };
    match headers.cast::<PyList>() {
        Ok(list) => list.iter().try_for_each(&mut take)?,
        Err(_) => {
            for pair in headers.try_iter()? {
                take(pair?)?;
            }
        }
    }
    let keep = found[REQUEST_ID].as_ref().is_some_and(|id| {
        id.cast::<PyBytes>()
            .is_ok_and(|b| usable_request_id(b.as_bytes()))
    });
    if !keep {
        found[REQUEST_ID] = Some(PyBytes::new(py, new_request_id().as_bytes()).into_any());
    }
    PyTuple::new(py, found)
}

/// 96 random bits as 24 lowercase hex digits: unique, not secret.
fn new_request_id() -> String {
    let bits = [REQUEST_IDS.next_u64(), REQUEST_IDS.next_u64()];
    let mut id = String::with_capacity(24);
    tollway_core::hex::push_lower(&mut id, &bits[0].to_le_bytes());
    tollway_core::hex::push_lower(&mut id, &bits[1].to_le_bytes()[..4]);
    id
}

/// Called in a forked child, so that workers do not share request ids.
#[pyfunction]
fn reseed_request_ids() {
    REQUEST_IDS.reseed();
}

/// The `Server-Timing` value from durations in seconds, written as milliseconds with three
/// decimals: `gateway`, `guardrail`, then `model` and `total`, or on a stream's head (no
/// `total_s`) `ttfb` in place of `model`.
#[pyfunction]
#[pyo3(signature = (gateway_s, guardrail_s, model_s, total_s=None))]
fn server_timing(
    py: Python<'_>,
    gateway_s: f64,
    guardrail_s: f64,
    model_s: f64,
    total_s: Option<f64>,
) -> Bound<'_, PyBytes> {
    let mut out = Vec::with_capacity(80);
    push_duration(&mut out, b"gateway", gateway_s);
    push_duration(&mut out, b"guardrail", guardrail_s);
    match total_s {
        Some(total) => {
            push_duration(&mut out, b"model", model_s);
            push_duration(&mut out, b"total", total);
        }
        None => push_duration(&mut out, b"ttfb", model_s),
    }
    PyBytes::new(py, &out)
}

/// `name;dur=<ms>` with three decimals (negative and non-finite durations as 0), after a
/// `, ` when it is not the first.
fn push_duration(out: &mut Vec<u8>, name: &[u8], seconds: f64) {
    let us = (seconds * 1e6).round();
    let us = if us.is_finite() && us > 0.0 {
        us as u64
    } else {
        0
    };
    if !out.is_empty() {
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(name);
    out.extend_from_slice(b";dur=");
    out.extend_from_slice(itoa::Buffer::new().format(us / 1000).as_bytes());
    let frac = us % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    REQUEST_IDS.reseed();
    m.add_function(wrap_pyfunction!(read_head, m)?)?;
    m.add_function(wrap_pyfunction!(reseed_request_ids, m)?)?;
    m.add_function(wrap_pyfunction!(server_timing, m)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_request_ids_are_24_hex_digits_and_differ() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_eq!(a.len(), 24);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[test]
    fn durations_are_milliseconds_with_three_decimals() {
        let mut out = Vec::new();
        push_duration(&mut out, b"model", 1.5);
        push_duration(&mut out, b"gateway", 0.000_123_4);
        push_duration(&mut out, b"ttfb", -0.2);
        push_duration(&mut out, b"total", f64::NAN);
        assert_eq!(
            out,
            b"model;dur=1500.000, gateway;dur=0.123, ttfb;dur=0.000, total;dur=0.000"
        );
    }

    #[test]
    fn request_ids_are_echoed_only_when_short_and_printable() {
        assert!(usable_request_id(b"req-123_abc.XYZ"));
        assert!(usable_request_id(&[b'a'; MAX_REQUEST_ID]));
        assert!(!usable_request_id(&[b'a'; MAX_REQUEST_ID + 1]));
        assert!(!usable_request_id(b""));
        assert!(!usable_request_id(b"has space"));
        assert!(!usable_request_id(b"line\nbreak"));
        assert!(!usable_request_id("caf\u{e9}".as_bytes()));
    }

    #[test]
    fn every_read_header_has_its_own_slot() {
        let names: [&[u8]; READ] = [
            b"authorization",
            b"content-length",
            b"x-tfy-metadata",
            b"x-request-id",
            b"x-tfy-request-timeout",
            b"x-tfy-ttft-timeout-ms",
            b"traceparent",
            b"x-tfy-guardrails",
            b"x-tfy-cache-config",
            b"x-tfy-logging-config",
        ];
        for (i, name) in names.iter().enumerate() {
            assert_eq!(slot(name), Some(i));
        }
        assert_eq!(slot(b"Authorization"), None); // ASGI names are lowercase
        assert_eq!(slot(b"host"), None);
    }
}
