//! The spans waiting for export, kept as the records they are built from: each batch is
//! decoded once at intake (for the metrics and the access log, [`super::fold`]) and queued
//! here as is, and a batch is built and encoded only when the exporter sends it.

use super::record::Record;
use std::collections::VecDeque;

/// The spans a record is counted as when it is dropped: its root and one per attempt.
pub fn span_count(rec: &Record) -> usize {
    1 + rec.attempts.len()
}

/// A bounded FIFO of records; what does not fit is dropped and counted by the caller.
pub struct SpanQueue {
    records: VecDeque<Record>,
    cap: usize,
}

impl SpanQueue {
    pub fn new(cap: usize) -> Self {
        Self {
            records: VecDeque::new(),
            cap,
        }
    }

    /// Queues what fits; returns the spans of the records that did not (dropped).
    pub fn push(&mut self, records: Vec<Record>) -> usize {
        let room = self.cap.saturating_sub(self.records.len());
        let mut dropped = 0;
        for (i, rec) in records.into_iter().enumerate() {
            if i < room {
                self.records.push_back(rec);
            } else {
                dropped += span_count(&rec);
            }
        }
        dropped
    }

    /// Up to `n` records, oldest first.
    pub fn take(&mut self, n: usize) -> Vec<Record> {
        let n = n.min(self.records.len());
        self.records.drain(..n).collect()
    }

    /// Drops everything queued; returns the spans dropped.
    pub fn clear(&mut self) -> usize {
        self.records.drain(..).map(|r| span_count(&r)).sum()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::record::decode_batch_json;

    fn records(n: usize) -> Vec<Record> {
        let one = r#"["r", 1, 2, "POST", "/v1/chat/completions", 200, "", "", "m", [], {}, "",
            [["t", "openai", "m", 1, 2, 200, "", "", "", null, null, [], null, null, null, null,
              1, "", null, null, null, false, null, null]], "", null, null, ""]"#;
        let batch = format!("[{}]", vec![one; n].join(","));
        decode_batch_json(batch.as_bytes()).unwrap()
    }

    #[test]
    fn what_does_not_fit_is_counted_in_spans_and_the_rest_leaves_in_order() {
        let mut q = SpanQueue::new(3);
        assert_eq!(q.push(records(2)), 0);
        assert_eq!(q.push(records(2)), 2, "one record of a root and an attempt");
        assert_eq!(q.len(), 3);
        assert_eq!(q.take(2).len(), 2);
        assert_eq!(q.take(5).len(), 1);
        assert!(q.is_empty());
        q.push(records(2));
        assert_eq!(q.clear(), 4);
    }
}
