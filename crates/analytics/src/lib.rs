//! Tollgate's usage analytics.
//!
//! - [`event`]: one [`Event`] per request, made by the proxy at the end of the request, and
//!   the contract's outcome classes ([`classify`]).
//! - [`meter`]: the [`Meter`], a bounded non-blocking hand-off of events to one aggregator
//!   thread, which folds them into per-minute rollups, Prometheus metrics and the JSON
//!   access log, and writes rollups to a [`UsageSink`] (the store) every second.
//! - [`rollup`]: the rollup rows ([`UsageKey`] → [`Usage`]) and their exact merge.
//! - [`sketch`]: the mergeable latency sketch (DDSketch, 1% relative accuracy).
//! - [`query`]: reports grouped by subscription, product, API, operation, status, minute
//!   or hour, as `GET /analytics/requests` answers them.
//! - [`metrics`]: the Prometheus families of `GET /metrics`.
//! - [`access_log`]: the access log's JSON line.
//!
//! Nothing here touches the network or the request path's locks; the store is reached
//! only through [`UsageSink`].

#![forbid(unsafe_code)]

pub mod access_log;
pub mod event;
pub mod meter;
pub mod metrics;
pub mod query;
pub mod rollup;
pub mod sketch;

pub use event::{classify, status_class, AccessFields, BlockedBy, Event, Outcome};
pub use meter::{Meter, MeterOptions, UsageSink};
pub use metrics::Metrics;
pub use query::{report, GroupBy, ReportRow};
pub use rollup::{Resolution, Usage, UsageFilter, UsageKey, UsageRow, HOUR, MINUTE};
pub use sketch::LatencySketch;
