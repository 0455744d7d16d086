//! Outputs besides the table and the JSON: the HDR interval log (`--hdr`), the SVG
//! percentile plot (`--plot`) and a process's resident memory (`idle --pid`).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, Context, Result};
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

/// An HDR histogram interval log being written to memory: one histogram per tag (`total`,
/// `tcp`, `tls`, `auth`) per progress interval, in µs, compressed V2 (what HdrHistogram's
/// `HistogramLogProcessor` and the other log readers take).
pub struct HdrLog {
    buf: Vec<u8>,
    serializer: V2DeflateSerializer,
    /// The cumulative histograms at the end of the previous interval, by tag.
    previous: Vec<(&'static str, Histogram<u64>)>,
    last: Duration,
}

impl HdrLog {
    pub fn new(start: SystemTime, description: &str) -> Result<HdrLog> {
        let mut log = HdrLog {
            buf: Vec::new(),
            serializer: V2DeflateSerializer::new(),
            previous: Vec::new(),
            last: Duration::ZERO,
        };
        IntervalLogWriterBuilder::new()
            .add_comment(&format!("loadgen {description}"))
            .add_comment("values in microseconds; tags: total, tcp, tls, auth")
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut log.buf, &mut log.serializer)?;
        Ok(log)
    }

    /// Writes, for each tag, what `cumulative` recorded since the previous call, as the
    /// interval ending `elapsed` after the start.
    pub fn interval(
        &mut self,
        elapsed: Duration,
        cumulative: &[(&'static str, &Histogram<u64>)],
    ) -> Result<()> {
        let duration = elapsed.saturating_sub(self.last);
        let mut writer =
            IntervalLogWriterBuilder::new().begin_log_with(&mut self.buf, &mut self.serializer)?;
        for (name, h) in cumulative {
            let mut delta = (*h).clone();
            if let Some((_, prev)) = self.previous.iter().find(|(n, _)| n == name) {
                delta
                    .subtract(prev)
                    .map_err(|e| anyhow!("histogram interval: {e:?}"))?;
            }
            if delta.is_empty() {
                continue;
            }
            writer
                .write_histogram(&delta, self.last, duration, Tag::new(name))
                .map_err(|e| anyhow!("writing the HDR log: {e}"))?;
        }
        self.previous = cumulative.iter().map(|(n, h)| (*n, (*h).clone())).collect();
        self.last = elapsed;
        Ok(())
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

/// `VmRSS` of process `pid` in kB, from `/proc/PID/status`.
pub fn rss_kb(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_vm_rss(&text).ok_or_else(|| anyhow!("{path} has no VmRSS line"))
}

/// CPU time of process `pid` in clock ticks: utime + stime (fields 14 and 15 of
/// `/proc/PID/stat`), which cover all its threads, live and exited.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&text).ok_or_else(|| anyhow!("{path}: no utime/stime fields"))
}

/// Fields are counted after the `)` closing the command name, which may hold spaces.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state): utime (14) is its 12th word, stime (15) its 13th.
    let mut words = rest.split_whitespace().skip(11);
    let utime: u64 = words.next()?.parse().ok()?;
    let stime: u64 = words.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Clock ticks per second of `/proc/PID/stat` (`getconf CLK_TCK`).
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// x position of percentile `p` (0..1) on the plot's axis: the number of nines,
/// -log10(1 - p), so 90 %, 99 %, 99.9 %, 99.99 % are evenly spaced.
fn nines(p: f64) -> f64 {
    -(1.0 - p).max(1e-12).log10()
}

/// The highest x shown: 99.99 %.
const MAX_NINES: f64 = 4.0;

/// A tick step for `max` that gives about 5 ticks: 1, 2 or 5 times a power of ten.
fn tick_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1.0);
    let magnitude = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if raw <= m * magnitude {
            return m * magnitude;
        }
    }
    10.0 * magnitude
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG latency percentile-distribution plot: percentile on x (0 to 99.99, spaced by
/// nines), latency in µs on y, one line per non-empty histogram. Written by hand (no
/// plotting dependency).
pub fn svg_plot(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    const W: f64 = 800.0;
    const H: f64 = 500.0;
    const LEFT: f64 = 80.0;
    const RIGHT: f64 = 140.0;
    const TOP: f64 = 40.0;
    const BOTTOM: f64 = 60.0;
    const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];
    let series: Vec<_> = series.iter().filter(|(_, h)| !h.is_empty()).collect();
    let points = 400;
    let curves: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, h)| {
            (0..=points)
                .map(|i| {
                    let x = MAX_NINES * i as f64 / points as f64;
                    let p = 1.0 - 10f64.powf(-x);
                    (x, h.value_at_quantile(p) as f64)
                })
                .collect()
        })
        .collect();
    let ymax_data = curves.iter().flatten().map(|&(_, y)| y).fold(1.0, f64::max);
    let step = tick_step(ymax_data);
    let ymax = (ymax_data / step).ceil() * step;
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let sx = |x: f64| LEFT + x / MAX_NINES * pw;
    let sy = |y: f64| TOP + ph - y / ymax * ph;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        LEFT + pw / 2.0,
        escape(title)
    );
    // Grid and ticks.
    for (x, label) in [
        (0.0, "0%"),
        (nines(0.5), "50%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
    ] {
        let px = sx(x);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            TOP + ph,
            TOP + ph + 18.0
        );
    }
    let mut y = 0.0;
    while y <= ymax + step / 2.0 {
        let py = sy(y);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            py + 4.0,
            y as u64
        );
        y += step;
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        H - 16.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">latency (µs)</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
    // Curves and legend.
    for (i, ((name, _), curve)) in series.iter().zip(&curves).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = curve
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = TOP + 10.0 + 20.0 * i as f64;
        let lx = LEFT + pw + 14.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(name)
        );
    }
    if series.is_empty() {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">no data</text>"#,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn vm_rss() {
        let status = "Name:\tpgring\nVmPeak:\t  200 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(rss_kb(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn cpu_ticks_parsing() {
        let stat = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 250 17 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(267));
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
        assert!(cpu_ticks(std::process::id()).is_ok());
        assert!(clk_tck() > 0);
    }

    #[test]
    fn plot_axes() {
        assert!((nines(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(nines(0.0), 0.0);
        assert_eq!(tick_step(1000.0), 200.0);
        assert_eq!(tick_step(4500.0), 1000.0);
        assert_eq!(tick_step(3.0), 1.0);
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let svg = svg_plot("tx <test>", &[("total", &h), ("empty", &new_histogram())]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("tx &lt;test&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("99.99%"));
    }

    #[test]
    fn hdr_log_round_trip() {
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut log = HdrLog::new(start, "test").unwrap();
        let mut total = new_histogram();
        total.record(100).unwrap();
        log.interval(Duration::from_secs(1), &[("total", &total)])
            .unwrap();
        total.record(200).unwrap();
        total.record(300).unwrap();
        log.interval(Duration::from_secs(2), &[("total", &total)])
            .unwrap();
        let bytes = log.into_bytes();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("#[StartTime: 1700000000.000"), "{text}");
        let mut counts = Vec::new();
        let mut deserializer = hdrhistogram::serialization::Deserializer::new();
        for entry in IntervalLogIterator::new(&bytes) {
            if let LogEntry::Interval(h) = entry.unwrap() {
                assert_eq!(h.tag().unwrap().as_str(), "total");
                let decoded = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    h.encoded_histogram(),
                )
                .unwrap();
                let hist: Histogram<u64> = deserializer
                    .deserialize(&mut std::io::Cursor::new(decoded))
                    .unwrap();
                counts.push(hist.len());
            }
        }
        assert_eq!(counts, vec![1, 2]);
    }
}
