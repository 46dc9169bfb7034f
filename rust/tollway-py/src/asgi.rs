//! The request head: the headers the gateway reads, picked out of the ASGI list in one pass
//! (a Python loop over a dozen headers cost more than the rest of the head's work).

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};

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
    if let Some(id) = &found[REQUEST_ID] {
        let keep = id
            .cast::<PyBytes>()
            .is_ok_and(|b| usable_request_id(b.as_bytes()));
        if !keep {
            found[REQUEST_ID] = None;
        }
    }
    PyTuple::new(py, found)
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(read_head, m)?)
}

#[cfg(test)]
mod tests {
    use super::*;

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
