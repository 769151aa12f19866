//! The status as metrics: OpenMetrics text (Pushgateway, anything that
//! scrapes it) and the Prometheus text format 0.0.4 (node_exporter's
//! textfile collector, which reads only that), both written by the
//! `prometheus-client` crate's encoders, never by hand.
//!
//! As cert-manager does for certificates, each tunnel's dates are gauges
//! holding Unix timestamps, so alert rules compare them with `time()` and
//! stay right between two runs of `psk status`; the conditions are 0/1
//! gauges. Every tunnel series has the labels `name`, `account_id`,
//! `tunnel_id`, `site` (empty when none) and `policy`. A date psk does not
//! know (a tunnel never rotated has no due date) is no series at all, not
//! a made-up value (and a metric no tunnel has a value for is left out).
//! The report is encoded through a [`Collector`], in
//! psk.yaml's order, so the same status gives the same bytes.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::{Report, TunnelStatus};

/// Which text format to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0 text, ending in `# EOF`.
    OpenMetrics,
    /// Prometheus text format 0.0.4, as node_exporter's textfile collector
    /// reads it.
    Prometheus,
}

/// The status as metrics text.
pub fn encode(report: &Report, format: Exposition) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatusCollector(report.clone())));
    let mut out = String::new();
    let written = match format {
        Exposition::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
        Exposition::Prometheus => {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)
        }
    };
    // Writing to a String cannot fail, and every name here is fixed.
    written.expect("metrics encode into a String");
    out
}

#[derive(Debug)]
struct StatusCollector(Report);

/// A tunnel's identifying labels.
struct TunnelLabels<'a>(&'a TunnelStatus);

impl EncodeLabelSet for TunnelLabels<'_> {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let t = self.0;
        let labels = [
            ("name", t.name.as_str()),
            ("account_id", t.key.account_id.as_str()),
            ("tunnel_id", t.key.tunnel_id.as_str()),
            ("site", t.site.as_deref().unwrap_or("")),
            ("policy", t.policy.as_str()),
        ];
        labels.as_slice().encode(encoder)
    }
}

/// A per-tunnel gauge: its name (the unit is appended for timestamps),
/// help, whether it is in seconds, and its value for a tunnel, if any.
type TunnelGauge = (
    &'static str,
    &'static str,
    bool,
    fn(&TunnelStatus, &Report) -> Option<i64>,
);

const TUNNEL_GAUGES: [TunnelGauge; 11] = [
    ("psk_tunnel_last_rotated_timestamp", "When the sealed PSK was made (Cloudflare's date), as a Unix time", true,
        |t, _| t.last_rotated.map(|d| d.timestamp())),
    ("psk_tunnel_next_due_timestamp", "When the PSK falls due by its policy, spread included, as a Unix time", true,
        |t, _| t.next_due.map(|d| d.timestamp())),
    ("psk_tunnel_deadline_timestamp", "When the policy's period runs out (last rotated + rotate_every, no spread), as a Unix time", true,
        |t, _| t.deadline.map(|d| d.timestamp())),
    ("psk_tunnel_rotation_start_timestamp", "The first instant the next rotation may start, change window included, as a Unix time", true,
        |t, _| t.starts.map(|d| d.timestamp())),
    ("psk_tunnel_overdue", "1 when the PSK is past its due date", false,
        |t, r| Some(t.overdue_by(r.now).is_some() as i64)),
    ("psk_tunnel_never_rotated", "1 when psk holds no sealed PSK for the tunnel", false,
        |t, _| Some(t.never_rotated() as i64)),
    ("psk_tunnel_interrupted", "1 when a rotation started and never recorded its answer: the PSK on the edge is unknown", false,
        |t, _| Some(t.interrupted().is_some() as i64)),
    ("psk_tunnel_pending", "1 when a PSK psk generated is sealed but Cloudflare never confirmed it", false,
        |t, _| Some(t.pending().is_some() as i64)),
    ("psk_tunnel_delivery_failed", "1 when the policy's deliver command failed for the sealed PSK", false,
        |t, _| Some(t.delivery_failed.is_some() as i64)),
    ("psk_tunnel_unverified", "1 when the tunnel got a new PSK and was not shown back up (verify): its site's other paths are held", false,
        |t, _| Some(t.unverified.is_some() as i64)),
    ("psk_tunnel_window", "1 when the tunnel's policy has a change window (the rotation start is then the window's opening)", false,
        |t, _| Some(t.window as i64)),
];

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let report = &self.0;
        for (name, help, seconds, value) in TUNNEL_GAUGES {
            let unit = seconds.then_some(Unit::Seconds);
            gauge_family(&mut encoder, name, help, unit.as_ref(), report, value)?;
        }
        outages(&mut encoder, report)?;
        if report.refreshed {
            gauge_family(
                &mut encoder,
                "psk_tunnel_changed_outside",
                "1 when Cloudflare's PSK changed after the one psk sealed (only with --refresh)",
                None,
                report,
                |t, _| Some(t.changed_outside().is_some() as i64),
            )?;
        }
        if let Some(u) = &report.unmanaged {
            unmanaged_families(&mut encoder, report, u)?;
        }
        if let Some((serial, _)) = &report.state {
            let mut m = encoder.encode_descriptor(
                "psk_state_serial",
                "The state file's serial, bumped on every write",
                None,
                MetricType::Gauge,
            )?;
            m.encode_gauge(&(*serial as i64))?;
        }
        let mut m = encoder.encode_descriptor(
            "psk_status_evaluated_timestamp",
            "When psk status evaluated the policies, as a Unix time",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        m.encode_gauge(&report.now.timestamp())?;
        let mut m = encoder.encode_descriptor(
            "psk_build",
            "The psk that wrote these metrics",
            None,
            MetricType::Info,
        )?;
        m.encode_info(&[("version", env!("CARGO_PKG_VERSION"))].as_slice())
    }
}

/// The upper bounds of `psk_rotation_outage_seconds`'s buckets: from what
/// a strongSwan router takes with psk's recipe (well under a second, see
/// BENCHMARKS.md) to a path left down for minutes.
const OUTAGE_BUCKETS: [f64; 11] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The rotations' outages as `verify` measured them: per tunnel its last
/// one (a gauge, for an alert on a bound), and over the fleet a histogram
/// of the same figures (for p50/p95 with `histogram_quantile`). Neither
/// family is written while no outage was measured.
fn outages(encoder: &mut DescriptorEncoder, report: &Report) -> Result<(), std::fmt::Error> {
    let measured: Vec<(&TunnelStatus, f64)> = (report.tunnels.iter())
        .filter_map(|t| Some((t, super::outage_seconds(t.last_outage?))))
        .collect();
    if measured.is_empty() {
        return Ok(());
    }
    let mut m = encoder.encode_descriptor(
        "psk_tunnel_last_rotation_outage_seconds",
        "The outage of the rotation that made the sealed PSK: from Cloudflare's answer that the edge took it to the path shown back up by verify, measured by psk",
        None,
        MetricType::Gauge,
    )?;
    for (t, seconds) in &measured {
        m.encode_family(&TunnelLabels(t))?.encode_gauge(seconds)?;
    }
    // Per bucket, not cumulative: the encoder adds them up.
    let mut lower = f64::NEG_INFINITY;
    let buckets: Vec<(f64, u64)> = (OUTAGE_BUCKETS.iter().chain([f64::INFINITY].iter()))
        .map(|le| {
            let n = measured
                .iter()
                .filter(|(_, s)| lower < *s && s <= le)
                .count();
            lower = *le;
            (*le, n as u64)
        })
        .collect();
    let sum: f64 = measured.iter().map(|(_, s)| s).sum();
    let mut m = encoder.encode_descriptor(
        "psk_rotation_outage_seconds",
        "The last measured rotation outage of every tunnel, over the fleet",
        // The unit is in the name only: OpenMetrics parsers refuse a UNIT
        // line on a histogram.
        None,
        MetricType::Histogram,
    )?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        sum,
        measured.len() as u64,
        &buckets,
        None,
    )
}

/// With `--refresh`: per account of psk.yaml, how many tunnels Cloudflare
/// lists that psk.yaml leaves out (0 included, so an alert needs no
/// `absent()`), and one series per such tunnel naming it.
fn unmanaged_families(
    encoder: &mut DescriptorEncoder,
    report: &Report,
    u: &crate::reconcile::unmanaged::Unmanaged,
) -> Result<(), std::fmt::Error> {
    let mut per_account: std::collections::BTreeMap<&str, i64> = (report.tunnels.iter())
        .map(|t| (t.key.account_id.as_str(), 0))
        .collect();
    for t in &u.tunnels {
        *per_account.entry(t.key.account_id.as_str()).or_default() += 1;
    }
    let mut m = encoder.encode_descriptor(
        "psk_unmanaged_tunnels",
        "Tunnels Cloudflare lists for the account that psk.yaml neither lists nor ignores: never rotated by psk (only with --refresh)",
        None,
        MetricType::Gauge,
    )?;
    for (account, n) in &per_account {
        let labels = [("account_id", *account)];
        m.encode_family(&labels.as_slice())?.encode_gauge(n)?;
    }
    if u.tunnels.is_empty() {
        return Ok(());
    }
    let mut m = encoder.encode_descriptor(
        "psk_unmanaged_tunnel",
        "1 for each tunnel Cloudflare lists that psk.yaml neither lists nor ignores, by its name at Cloudflare (only with --refresh)",
        None,
        MetricType::Gauge,
    )?;
    for t in &u.tunnels {
        let labels = [
            ("name", t.name.as_str()),
            ("account_id", t.key.account_id.as_str()),
            ("tunnel_id", t.key.tunnel_id.as_str()),
        ];
        m.encode_family(&labels.as_slice())?.encode_gauge(&1i64)?;
    }
    Ok(())
}

/// One gauge with a series per tunnel that has a value; no family at all
/// when none has (say, no tunnel rotated yet).
fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    report: &Report,
    value: fn(&TunnelStatus, &Report) -> Option<i64>,
) -> Result<(), std::fmt::Error> {
    let series: Vec<(&TunnelStatus, i64)> = (report.tunnels.iter())
        .filter_map(|t| Some((t, value(t, report)?)))
        .collect();
    if series.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (t, v) in series {
        metric.encode_family(&TunnelLabels(t))?.encode_gauge(&v)?;
    }
    Ok(())
}
