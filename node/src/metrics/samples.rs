//! Families read at scrape time from counters the node keeps anyway, written by the
//! registry's encoder like the registered ones.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// A sample's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SampleValue {
    Counter(u64),
    Gauge(u64),
    /// A gauge with a fraction or a sign (a ratio, seconds).
    GaugeF64(f64),
}

/// One family read at scrape time: its name as exposed (a counter's with `_total`), its
/// help, and its samples (label pairs and value).
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    pub series: Vec<(Vec<(&'static str, &'static str)>, SampleValue)>,
}

impl Sample {
    /// A family of one unlabelled sample.
    pub fn one(name: &'static str, help: &'static str, value: SampleValue) -> Self {
        Self {
            name,
            help,
            series: vec![(Vec::new(), value)],
        }
    }
}

/// The families of one scrape.
#[derive(Debug, Default)]
pub struct Samples(pub Vec<Sample>);

impl Collector for Samples {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for sample in &self.0 {
            let Some((_, first)) = sample.series.first() else {
                continue;
            };
            let kind = match first {
                SampleValue::Counter(_) => MetricType::Counter,
                SampleValue::Gauge(_) | SampleValue::GaugeF64(_) => MetricType::Gauge,
            };
            // OpenMetrics names a counter's family without the `_total` its sample has.
            let name = match kind {
                MetricType::Counter => sample.name.strip_suffix("_total").unwrap_or(sample.name),
                _ => sample.name,
            };
            let mut family = encoder.encode_descriptor(name, sample.help, None, kind)?;
            if let [(labels, value)] = sample.series.as_slice()
                && labels.is_empty()
            {
                encode_value(*value, family)?;
                continue;
            }
            for (labels, value) in &sample.series {
                encode_value(*value, family.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}

fn encode_value(value: SampleValue, metric: MetricEncoder) -> Result<(), std::fmt::Error> {
    match value {
        SampleValue::Counter(v) => ConstCounter::new(v).encode(metric),
        SampleValue::Gauge(v) => ConstGauge::new(v).encode(metric),
        SampleValue::GaugeF64(v) => ConstGauge::new(v).encode(metric),
    }
}
