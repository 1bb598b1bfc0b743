//! Client request latency: HTTP by route × method × status class, RESP by command ×
//! outcome. Each is a fixed table of [`Histogram`]s made when the node starts, indexed by
//! enums, so recording a request is an index computation and two atomic adds. Cells that
//! saw no request are left out of the exposition.

use std::time::Duration;

use axum::http::StatusCode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;

use super::histogram::Histogram;
use crate::http::route::{Route, RouteMethod};

/// Status classes 1xx to 5xx.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The class of `status`, as an index into [`CLASSES`].
pub fn status_class(status: StatusCode) -> usize {
    usize::from(status.as_u16() / 100).clamp(1, 5) - 1
}

type MethodCells = [[Histogram; CLASSES.len()]; RouteMethod::ALL.len()];

/// HTTP request latency, one histogram per route, method and status class.
#[derive(Debug, Default)]
pub struct HttpRequests {
    cells: Box<[MethodCells; Route::ALL.len()]>,
}

impl HttpRequests {
    pub fn observe(&self, route: Route, method: RouteMethod, status: StatusCode, took: Duration) {
        self.cells[route.index()][method.index()][status_class(status)].observe(took);
    }

    /// Every cell with its labels.
    fn each(&self) -> impl Iterator<Item = ([(&'static str, &'static str); 3], &Histogram)> {
        Route::ALL.into_iter().flat_map(move |route| {
            RouteMethod::ALL.into_iter().flat_map(move |method| {
                CLASSES.iter().enumerate().map(move |(class, outcome)| {
                    let labels = [
                        ("route", route.template()),
                        ("method", method.as_str()),
                        ("outcome", *outcome),
                    ];
                    (labels, &self.cells[route.index()][method.index()][class])
                })
            })
        })
    }

    /// Responses of each status class (the histograms' counts, summed).
    pub fn responses_by_class(&self) -> [u64; CLASSES.len()] {
        let mut classes = [0; CLASSES.len()];
        for per_method in self.cells.iter() {
            for per_class in per_method {
                for (class, histogram) in per_class.iter().enumerate() {
                    classes[class] += histogram.count();
                }
            }
        }
        classes
    }
}

/// `kache_http_request_duration_seconds`.
#[derive(Debug)]
pub struct HttpLatency(pub std::sync::Arc<HttpRequests>);

impl EncodeMetric for HttpLatency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, histogram) in self.0.each() {
            if histogram.count() > 0 {
                histogram.encode(encoder.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `kache_http_responses_total{class}`: the histograms' counts by class, so a response
/// is counted once, where its latency is.
#[derive(Debug)]
pub struct HttpResponses(pub std::sync::Arc<HttpRequests>);

impl EncodeMetric for HttpResponses {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (class, count) in CLASSES.iter().zip(self.0.responses_by_class()) {
            ConstCounter::new(count).encode(encoder.encode_family(&[("class", *class)])?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// RESP command latency: one histogram per command of the table (and one for unknown
/// commands) and outcome.
#[derive(Debug)]
pub struct RespCommands {
    names: Vec<&'static str>,
    /// `[command][ok, error]`; the last command is "other".
    cells: Box<[[Histogram; 2]]>,
}

impl Default for RespCommands {
    fn default() -> Self {
        let mut names: Vec<&'static str> = crate::resp::command_names().collect();
        names.push("other");
        let cells = names.iter().map(|_| Default::default()).collect();
        Self { names, cells }
    }
}

impl RespCommands {
    pub fn observe(&self, command: Option<usize>, ok: bool, took: Duration) {
        let other = self.cells.len() - 1;
        let at = command.filter(|&at| at < other).unwrap_or(other);
        self.cells[at][usize::from(!ok)].observe(took);
    }
}

/// `kache_resp_command_duration_seconds`.
#[derive(Debug)]
pub struct RespLatency(pub std::sync::Arc<RespCommands>);

impl EncodeMetric for RespLatency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (name, cells) in self.0.names.iter().zip(self.0.cells.iter()) {
            for (outcome, histogram) in ["ok", "error"].into_iter().zip(cells) {
                if histogram.count() > 0 {
                    let labels = [("command", *name), ("outcome", outcome)];
                    histogram.encode(encoder.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_lands_in_the_cell_of_its_route_method_and_class() {
        let http = HttpRequests::default();
        let took = Duration::from_micros(80);
        http.observe(Route::Keys, RouteMethod::Get, StatusCode::OK, took);
        http.observe(Route::Keys, RouteMethod::Get, StatusCode::NOT_FOUND, took);
        http.observe(
            Route::Unmatched,
            RouteMethod::Other,
            StatusCode::IM_A_TEAPOT,
            took,
        );
        let counted: Vec<_> = http
            .each()
            .filter(|(_, histogram)| histogram.count() > 0)
            .map(|(labels, histogram)| (labels.map(|(_, value)| value), histogram.count()))
            .collect();
        assert_eq!(
            counted,
            [
                (["/v1/keys/{key}", "GET", "2xx"], 1),
                (["/v1/keys/{key}", "GET", "4xx"], 1),
                (["unmatched", "other", "4xx"], 1),
            ]
        );
        assert_eq!(http.responses_by_class(), [0, 1, 0, 2, 0]);
    }

    #[test]
    fn an_unknown_resp_command_counts_as_other() {
        let resp = RespCommands::default();
        resp.observe(Some(0), true, Duration::from_micros(5));
        resp.observe(None, false, Duration::from_micros(5));
        resp.observe(Some(usize::MAX), false, Duration::from_micros(5));
        assert_eq!(resp.names[0], "get");
        assert_eq!(resp.cells[0][0].count(), 1);
        let other = resp.cells.len() - 1;
        assert_eq!(resp.names[other], "other");
        assert_eq!(resp.cells[other][1].count(), 2);
    }
}
