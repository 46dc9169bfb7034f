//! The gateway's metric families in, one OTLP `ExportMetricsServiceRequest` out.
//!
//! The Python metrics store hands over what `/metrics` shows (every worker's totals) once per
//! export interval as one JSON array (msgspec, `array_like`); this builds the official OTLP
//! messages with cumulative temporality and the same histogram buckets, and encodes them as
//! protobuf or OTLP/JSON. It runs off the request path, beside the span encoder that shares its
//! resource and scope conventions.

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde::Deserialize;

use super::otlp::Encoding;

/// One family, field for field the Python `tollway.telemetry.otlp_metrics.Family`.
#[derive(Debug, Deserialize)]
pub struct Family {
    pub name: String,
    pub description: String,
    pub unit: String,
    /// `counter` (a monotonic cumulative sum), `gauge` or `histogram`.
    pub kind: String,
    pub labels: Vec<String>,
    /// Histogram upper bounds, without the implicit +Inf.
    pub bounds: Vec<f64>,
    pub points: Vec<Point>,
}

/// `(label values, value, bucket counts, sum)`: counters and gauges use `value`; histograms
/// give non-cumulative `bucket counts` (one per bound, then +Inf), and `sum`.
#[derive(Debug, Deserialize)]
pub struct Point(pub Vec<String>, pub f64, pub Vec<f64>, pub f64);

/// `(start, now, families)` as Python sends it; times are Unix nanoseconds.
#[derive(Debug, Deserialize)]
pub struct Batch(pub u64, pub u64, pub Vec<Family>);

pub fn decode_batch(json: &[u8]) -> Result<Batch, serde_json::Error> {
    serde_json::from_slice(json)
}

/// Resource and scope are built once per process.
pub struct MetricsEncoder {
    resource: Resource,
    scope: InstrumentationScope,
}

fn text(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_owned())),
        }),
        ..Default::default()
    }
}

fn attributes(names: &[String], values: &[String]) -> Vec<KeyValue> {
    // An empty label value is an absent label in Prometheus: leave it out here too.
    names
        .iter()
        .zip(values)
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| text(k, v))
        .collect()
}

impl MetricsEncoder {
    pub fn new(service_name: &str, resource_attributes: &[(String, String)]) -> Self {
        let mut attributes = vec![text("service.name", service_name)];
        attributes.extend(
            resource_attributes
                .iter()
                .filter(|(k, _)| k != "service.name")
                .map(|(k, v)| text(k, v)),
        );
        attributes.push(text("telemetry.sdk.name", "tollway"));
        attributes.push(text("telemetry.sdk.language", "rust"));
        Self {
            resource: Resource {
                attributes,
                ..Default::default()
            },
            scope: InstrumentationScope {
                name: "tollway".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                ..Default::default()
            },
        }
    }

    fn metric(family: &Family, start: u64, now: u64) -> Option<Metric> {
        let number = |p: &Point| NumberDataPoint {
            attributes: attributes(&family.labels, &p.0),
            start_time_unix_nano: start,
            time_unix_nano: now,
            value: Some(number_data_point::Value::AsDouble(p.1)),
            ..Default::default()
        };
        let cumulative = AggregationTemporality::Cumulative as i32;
        let data = match family.kind.as_str() {
            "counter" => Data::Sum(Sum {
                data_points: family.points.iter().map(number).collect(),
                aggregation_temporality: cumulative,
                is_monotonic: true,
            }),
            "gauge" => Data::Gauge(Gauge {
                data_points: family.points.iter().map(number).collect(),
            }),
            "histogram" => Data::Histogram(Histogram {
                data_points: family
                    .points
                    .iter()
                    .filter(|p| p.2.len() == family.bounds.len() + 1)
                    .map(|p| {
                        let counts: Vec<u64> = p.2.iter().map(|c| *c as u64).collect();
                        HistogramDataPoint {
                            attributes: attributes(&family.labels, &p.0),
                            start_time_unix_nano: start,
                            time_unix_nano: now,
                            count: counts.iter().sum(),
                            sum: Some(p.3),
                            bucket_counts: counts,
                            explicit_bounds: family.bounds.clone(),
                            ..Default::default()
                        }
                    })
                    .collect(),
                aggregation_temporality: cumulative,
            }),
            _ => return None,
        };
        Some(Metric {
            name: family.name.clone(),
            description: family.description.clone(),
            unit: family.unit.clone(),
            data: Some(data),
            ..Default::default()
        })
    }

    /// One export request for every family with at least one point.
    pub fn encode(&self, batch: &Batch, encoding: Encoding) -> Vec<u8> {
        let Batch(start, now, families) = batch;
        let metrics = families
            .iter()
            .filter(|f| !f.points.is_empty())
            .filter_map(|f| Self::metric(f, *start, *now))
            .collect();
        let req = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(self.scope.clone()),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        match encoding {
            Encoding::Protobuf => req.encode_to_vec(),
            Encoding::Json => serde_json::to_vec(&req).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: &str = r#"[1000, 5000, [
      ["llm_gateway_input_tokens", "Input tokens.", "", "counter",
       ["model_name", "llm_gateway_metadata_customer_id"], [],
       [[["gpt-4o", "acme"], 12.0, [], 0.0], [["gpt-4o", ""], 3.0, [], 0.0]]],
      ["llm_gateway_request_processing_ms", "Latency.", "ms", "histogram", ["model_name"],
       [5.0, 10.0], [[["gpt-4o"], 3.0, [1.0, 0.0, 2.0], 40.5]]],
      ["llm_gateway_budget_limit_usd", "Limit.", "USD", "gauge", ["rule"], [],
       [[["team"], 0.5, [], 0.0]]],
      ["llm_gateway_unused", "", "", "counter", [], [], []]
    ]]"#;

    #[test]
    fn families_become_cumulative_sums_histograms_and_gauges() {
        let batch = decode_batch(BATCH.as_bytes()).unwrap();
        let enc = MetricsEncoder::new("gw", &[("env".into(), "e2e".into())]);
        let body = enc.encode(&batch, Encoding::Protobuf);
        let req = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        let rm = &req.resource_metrics[0];
        assert_eq!(rm.resource.as_ref().unwrap().attributes[1].key, "env");
        let metrics = &rm.scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 3, "an empty family is left out");
        let Some(Data::Sum(sum)) = &metrics[0].data else {
            panic!("a counter is a sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(sum.data_points[0].attributes.len(), 2);
        assert_eq!(
            sum.data_points[1].attributes.len(),
            1,
            "empty label dropped"
        );
        assert_eq!(sum.data_points[0].start_time_unix_nano, 1000);
        let Some(Data::Histogram(h)) = &metrics[1].data else {
            panic!("a histogram")
        };
        let p = &h.data_points[0];
        assert_eq!(
            (p.count, p.sum, &p.bucket_counts, &p.explicit_bounds),
            (3, Some(40.5), &vec![1, 0, 2], &vec![5.0, 10.0])
        );
        assert!(matches!(metrics[2].data, Some(Data::Gauge(_))));
        let json = enc.encode(&batch, Encoding::Json);
        assert!(String::from_utf8_lossy(&json).contains("llm_gateway_input_tokens"));
    }
}
