//! Latency-percentile plots: the HDR percentile distribution of one run (`--plot`) or of several
//! runs overlaid (`loadgen plot`), written as a self-contained SVG by hand.
//!
//! The x axis is the percentile on a "nines" scale, x = -log10(1 - p/100): 0 is 0 %, 1 is 90 %,
//! 2 is 99 %, 3 is 99.9 %, 4 is 99.99 % (the right edge), so the tail gets as much room as the
//! body. The y axis is the latency, logarithmic by default (`--y linear` for a linear one).
//!
//! A run is read back from its `--json` summary (the `percentiles_us` list, or failing that the
//! five fixed percentiles of `latency_us`) or from an `.hgrm` file (HdrHistogram's percentile
//! distribution, values in milliseconds: loadgen's `--hgrm` or any other tool's).

use std::fmt::Write as _;
use std::path::Path;

use clap::ValueEnum;
use hdrhistogram::Histogram;

use crate::cli::PlotArgs;

/// Nines at the right edge of the plot: 99.99 %.
const NINES_MAX: f64 = 4.0;
/// The JSON summary's percentile list: every tenth of a nine from 0 % to 99.999 %, the
/// quartiles, then 100 %.
const LIST_NINES_MAX: u32 = 50;
const LIST_NINES_PER_STEP: f64 = 0.1;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 560.0;
const LEFT: f64 = 78.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 58.0;
const COLOURS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
/// Series beyond the eighth repeat the colours with these dash patterns.
const DASHES: [&str; 3] = ["", "8 4", "2 3"];

/// How the latency axis is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum YScale {
    Log,
    Linear,
}

/// One run's distribution: (percentile 0..=100, latency µs) in ascending percentile order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    pub(crate) label: String,
    pub(crate) points: Vec<(f64, f64)>,
}

/// The percentile list of the JSON summary: (percentile, latency µs) every tenth of a nine from
/// 0 % to 99.999 %, and the quartiles (so that the median is exact), then (100, max); empty
/// without samples.
pub(crate) fn percentile_points(histogram: &Histogram<u64>) -> Vec<(f64, f64)> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut quantiles: Vec<f64> = (0..=LIST_NINES_MAX)
        .map(|step| 1.0 - 10f64.powf(-f64::from(step) * LIST_NINES_PER_STEP))
        .chain([0.25, 0.5, 0.75])
        .collect();
    quantiles.sort_by(f64::total_cmp);
    let mut points: Vec<(f64, f64)> = quantiles
        .into_iter()
        .map(|quantile| {
            let micros = histogram.value_at_quantile(quantile) as f64 / 1000.0;
            (100.0 * quantile, micros)
        })
        .collect();
    points.push((100.0, histogram.max() as f64 / 1000.0));
    points
}

/// `[[0, 12.3], [20.567, 14.1], …, [100, 812.5]]` for the JSON summary's `percentiles_us`.
pub(crate) fn percentile_points_json(histogram: &Histogram<u64>) -> String {
    let mut out = String::from("[");
    for (index, (percentile, micros)) in percentile_points(histogram).into_iter().enumerate() {
        let separator = if index == 0 { "" } else { ", " };
        let percentile = trim(format!("{percentile:.5}"));
        let _ = write!(out, "{separator}[{percentile}, {micros:.3}]");
    }
    out.push(']');
    out
}

fn trim(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

impl Series {
    /// A series straight from a histogram (nanoseconds), at the JSON summary's percentiles.
    pub(crate) fn from_histogram(label: &str, histogram: &Histogram<u64>) -> Series {
        Series {
            label: label.to_string(),
            points: percentile_points(histogram),
        }
    }

    /// Latency at `percentile`: that of the first point at or above it (as HdrHistogram reads
    /// its distribution), or the last point's.
    fn at(&self, percentile: f64) -> Option<f64> {
        let first_above = self
            .points
            .iter()
            .find(|(p, _)| *p >= percentile - 1e-9)
            .or(self.points.last());
        first_above.map(|&(_, micros)| micros)
    }

    /// Plot coordinates (nines, µs) up to the right edge; the point at the edge is the value
    /// HdrHistogram gives for 99.99 %.
    fn plotted(&self) -> Vec<(f64, f64)> {
        let mut out = Vec::with_capacity(self.points.len());
        for &(percentile, micros) in &self.points {
            let x = nines(percentile);
            if x < NINES_MAX - 1e-9 {
                out.push((x, micros));
            } else {
                out.push((NINES_MAX, micros));
                break;
            }
        }
        out
    }
}

/// -log10(1 - p/100), infinite at 100 %.
fn nines(percentile: f64) -> f64 {
    let rest = 1.0 - percentile / 100.0;
    if rest <= 0.0 {
        f64::INFINITY
    } else {
        -rest.log10()
    }
}

/// Escapes text for an SVG text node or a quoted attribute.
fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `750µs`, `2.1ms`, `1.5s`: a latency for a label, with about three significant digits.
pub(crate) fn format_micros(micros: f64) -> String {
    if micros == 0.0 {
        return "0".into();
    }
    let (value, unit) = if micros >= 1e6 {
        (micros / 1e6, "s")
    } else if micros >= 1e3 {
        (micros / 1e3, "ms")
    } else {
        (micros, "µs")
    };
    let text = if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    format!("{}{unit}", trim(text))
}

/// The percentile at `nines` for a tick label: `0%`, `90%`, `99.9%`.
fn percentile_label(nines: f64) -> String {
    let percentile = 100.0 * (1.0 - 10f64.powf(-nines));
    format!("{}%", trim(format!("{percentile:.4}")))
}

/// A latency axis: maps µs to a y coordinate and lists its ticks.
struct Axis {
    scale: YScale,
    low: f64,
    high: f64,
}

impl Axis {
    fn new(scale: YScale, series: &[Vec<(f64, f64)>]) -> Axis {
        let values = series.iter().flatten().map(|&(_, micros)| micros);
        let (mut min, mut max) = (f64::INFINITY, 0f64);
        for value in values {
            if value > 0.0 {
                min = min.min(value);
            }
            max = max.max(value);
        }
        if !min.is_finite() || max <= 0.0 {
            (min, max) = (1.0, 10.0);
        }
        match scale {
            YScale::Log => {
                let low = 10f64.powf(min.log10().floor());
                let mut high = 10f64.powf(max.log10().ceil());
                if high <= low {
                    high = low * 10.0;
                }
                Axis { scale, low, high }
            }
            YScale::Linear => {
                let step = linear_step(max * 1.05);
                let high = (max * 1.05 / step).ceil() * step;
                Axis {
                    scale,
                    low: 0.0,
                    high,
                }
            }
        }
    }

    /// Fraction of the height from the bottom.
    fn fraction(&self, micros: f64) -> f64 {
        let fraction = match self.scale {
            YScale::Log => {
                let micros = micros.max(self.low);
                (micros / self.low).log10() / (self.high / self.low).log10()
            }
            YScale::Linear => (micros - self.low) / (self.high - self.low),
        };
        fraction.clamp(0.0, 1.0)
    }

    /// (value, labelled) tick positions.
    fn ticks(&self) -> Vec<(f64, bool)> {
        match self.scale {
            YScale::Log => {
                let mut ticks = Vec::new();
                let mut decade = self.low;
                let decades = (self.high / self.low).log10().round() as i32;
                while decade < self.high * (1.0 - 1e-9) {
                    for (mantissa, labelled) in
                        [(1.0, true), (2.0, decades <= 4), (5.0, decades <= 4)]
                    {
                        ticks.push((decade * mantissa, labelled));
                    }
                    decade *= 10.0;
                }
                ticks.push((self.high, true));
                ticks
            }
            YScale::Linear => {
                let step = linear_step(self.high);
                let count = (self.high / step).round() as u32;
                (0..=count).map(|i| (f64::from(i) * step, true)).collect()
            }
        }
    }
}

/// A 1-2-5 step that cuts `span` into at most 8 intervals.
fn linear_step(span: f64) -> f64 {
    if span <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf((span / 8.0).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|step| span / step <= 8.0)
        .unwrap_or(10.0 * magnitude)
}

/// The SVG document: every series' percentile distribution on one chart, with a legend.
pub(crate) fn svg(title: &str, series: &[Series], scale: YScale) -> String {
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let plotted: Vec<Vec<(f64, f64)>> = series.iter().map(Series::plotted).collect();
    let axis = Axis::new(scale, &plotted);
    let x_of = |nines: f64| LEFT + plot_width * (nines / NINES_MAX).clamp(0.0, 1.0);
    let y_of = |micros: f64| TOP + plot_height * (1.0 - axis.fraction(micros));

    let mut out = String::new();
    let _ = writeln!(out, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        xml_escape(title)
    );

    // Grid and tick labels.
    let _ = writeln!(
        out,
        r##"<g class="grid" stroke="#e4e4e4" stroke-width="1">"##
    );
    let minor_nines = [0.602, 1.301, 2.301, 3.301];
    for nines in minor_nines {
        let x = x_of(nines);
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke-dasharray="3 3"/>"#,
            TOP + plot_height
        );
    }
    let major_nines = [0.0, std::f64::consts::LOG10_2, 1.0, 2.0, 3.0, 4.0];
    for nines in major_nines {
        let x = x_of(nines);
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}"/>"#,
            TOP + plot_height
        );
    }
    let ticks = axis.ticks();
    for &(micros, labelled) in &ticks {
        let y = y_of(micros);
        let dash = if labelled {
            ""
        } else {
            r#" stroke-dasharray="3 3""#
        };
        let _ = writeln!(
            out,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"{dash}/>"#,
            LEFT + plot_width
        );
    }
    let _ = writeln!(out, "</g>");
    let _ = writeln!(out, r##"<g class="ticks" fill="#333">"##);
    for nines in major_nines {
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x_of(nines),
            TOP + plot_height + 18.0,
            percentile_label(nines)
        );
    }
    for &(micros, labelled) in &ticks {
        if labelled {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
                LEFT - 6.0,
                y_of(micros) + 4.0,
                xml_escape(&format_micros(micros))
            );
        }
    }
    let _ = writeln!(out, "</g>");
    let _ = writeln!(
        out,
        r##"<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#888"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (log scale of nines)</text>"#,
        LEFT + plot_width / 2.0,
        HEIGHT - 14.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">latency ({})</text>"#,
        TOP + plot_height / 2.0,
        match scale {
            YScale::Log => "log scale",
            YScale::Linear => "linear scale",
        }
    );

    // The series, then the legend over them.
    for (index, (one, points)) in series.iter().zip(&plotted).enumerate() {
        let (colour, dash) = style(index);
        let mut coordinates = String::new();
        for (position, &(nines, micros)) in points.iter().enumerate() {
            let separator = if position == 0 { "" } else { " " };
            let _ = write!(
                coordinates,
                "{separator}{:.1},{:.1}",
                x_of(nines),
                y_of(micros)
            );
        }
        let _ = writeln!(
            out,
            r#"<g class="series" data-label="{label}"><title>{label}</title><polyline fill="none" stroke="{colour}" stroke-width="2"{dash} stroke-linejoin="round" points="{coordinates}"/></g>"#,
            label = xml_escape(&one.label),
        );
    }
    let legend_lines: Vec<String> = series.iter().map(legend_text).collect();
    let longest = legend_lines
        .iter()
        .map(|line| line.chars().count())
        .max()
        .unwrap_or(0);
    let legend_width = (40.0 + 6.6 * longest as f64).min(plot_width - 20.0);
    let legend_height = 8.0 + 18.0 * series.len() as f64;
    // Bottom right: the tails rise to the right, so that corner is the emptiest.
    let legend_x = LEFT + plot_width - legend_width - 10.0;
    let legend_y = TOP + plot_height - legend_height - 10.0;
    let _ = writeln!(
        out,
        r##"<g class="legend"><rect x="{legend_x:.1}" y="{legend_y:.1}" width="{legend_width:.1}" height="{legend_height:.1}" fill="white" fill-opacity="0.85" stroke="#bbb"/>"##,
    );
    for (index, line) in legend_lines.iter().enumerate() {
        let (colour, dash) = style(index);
        let y = legend_y + 16.0 + 18.0 * index as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}">{}</text>"#,
            legend_x + 8.0,
            y - 4.0,
            legend_x + 30.0,
            y - 4.0,
            legend_x + 36.0,
            y,
            xml_escape(line)
        );
    }
    let _ = writeln!(out, "</g>");
    let _ = writeln!(out, "</svg>");
    out
}

/// The colour and the `stroke-dasharray` attribute of series `index`.
fn style(index: usize) -> (&'static str, String) {
    let colour = COLOURS[index % COLOURS.len()];
    let dash = DASHES[(index / COLOURS.len()) % DASHES.len()];
    let dash = if dash.is_empty() {
        String::new()
    } else {
        format!(r#" stroke-dasharray="{dash}""#)
    };
    (colour, dash)
}

/// `nginx: p50 754µs, p99 2.06ms, p99.9 4.75ms`.
fn legend_text(series: &Series) -> String {
    let mut line = series.label.clone();
    for (index, (name, percentile)) in [("p50", 50.0), ("p99", 99.0), ("p99.9", 99.9)]
        .into_iter()
        .enumerate()
    {
        if let Some(micros) = series.at(percentile) {
            let separator = if index == 0 { ": " } else { ", " };
            let _ = write!(line, "{separator}{name} {}", format_micros(micros));
        }
    }
    line
}

/// `loadgen plot`: reads every input and writes the overlay.
pub(crate) fn run(args: &PlotArgs) -> Result<(), String> {
    let mut series = Vec::with_capacity(args.inputs.len());
    for input in &args.inputs {
        let (label, path) = split_input(input);
        let text = std::fs::read_to_string(path)
            .map_err(|error| format!("cannot read {path}: {error}"))?;
        let points = parse_points(&text).map_err(|why| format!("{path}: {why}"))?;
        series.push(Series { label, points });
    }
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| "latency by percentile".to_string());
    std::fs::write(&args.out, svg(&title, &series, args.y))
        .map_err(|error| format!("cannot write {}: {error}", args.out.display()))
}

/// `LABEL=PATH` or `PATH` (labelled by its file name without the extension). A path that exists
/// as given is never split.
fn split_input(input: &str) -> (String, &str) {
    if !Path::new(input).exists()
        && let Some((label, path)) = input.split_once('=')
        && !label.is_empty()
    {
        return (label.to_string(), path);
    }
    let stem = Path::new(input)
        .file_stem()
        .map_or_else(|| input.to_string(), |s| s.to_string_lossy().into_owned());
    (stem, input)
}

/// The distribution in a JSON summary or an .hgrm file (told apart by the first character).
pub(crate) fn parse_points(text: &str) -> Result<Vec<(f64, f64)>, String> {
    let points = if text.trim_start().starts_with('{') {
        json_points(&Json::parse(text)?)?
    } else {
        hgrm_points(text)?
    };
    if points.is_empty() {
        return Err("no latency samples".into());
    }
    Ok(points)
}

/// `percentiles_us`, or else the fixed percentiles of `latency_us`.
fn json_points(summary: &Json) -> Result<Vec<(f64, f64)>, String> {
    if let Some(Json::Array(list)) = summary.get("percentiles_us") {
        let mut points = Vec::with_capacity(list.len());
        for pair in list {
            match pair {
                Json::Array(pair) => match pair.as_slice() {
                    [Json::Number(p), Json::Number(us)] => points.push((*p, *us)),
                    _ => return Err("percentiles_us holds [percentile, µs] pairs".into()),
                },
                _ => return Err("percentiles_us holds [percentile, µs] pairs".into()),
            }
        }
        return Ok(points);
    }
    let latency = summary
        .get("latency_us")
        .ok_or("neither percentiles_us nor latency_us: not a loadgen --json summary")?;
    if matches!(latency.get("count"), Some(Json::Number(count)) if *count == 0.0) {
        return Ok(Vec::new());
    }
    let mut points = Vec::new();
    for (key, percentile) in [
        ("p50", 50.0),
        ("p90", 90.0),
        ("p99", 99.0),
        ("p999", 99.9),
        ("max", 100.0),
    ] {
        if let Some(Json::Number(us)) = latency.get(key) {
            points.push((percentile, *us));
        }
    }
    Ok(points)
}

/// The rows `value(ms) percentile(0..1) total_count [1/(1-percentile)]` of an .hgrm file.
fn hgrm_points(text: &str) -> Result<Vec<(f64, f64)>, String> {
    let mut points = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("Value") {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(value), Some(fraction)) = (fields.next(), fields.next()) else {
            continue;
        };
        let (Ok(ms), Ok(fraction)) = (value.parse::<f64>(), fraction.parse::<f64>()) else {
            return Err(format!("not an .hgrm row: `{line}`"));
        };
        if !(0.0..=1.0).contains(&fraction) || !ms.is_finite() {
            return Err(format!("not an .hgrm row: `{line}`"));
        }
        points.push((100.0 * fraction, 1000.0 * ms));
    }
    Ok(points)
}

/// Just enough JSON to read a summary back.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn parse(text: &str) -> Result<Json, String> {
        let mut reader = JsonReader {
            bytes: text.as_bytes(),
            at: 0,
            depth: 0,
        };
        let value = reader.value()?;
        reader.space();
        if reader.at != reader.bytes.len() {
            return Err(reader.fail("trailing characters"));
        }
        Ok(value)
    }

    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

struct JsonReader<'a> {
    bytes: &'a [u8],
    at: usize,
    depth: u32,
}

impl JsonReader<'_> {
    fn fail(&self, why: &str) -> String {
        format!("invalid JSON at byte {}: {why}", self.at)
    }

    fn space(&mut self) {
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| b.is_ascii_whitespace())
        {
            self.at += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.space();
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.space();
        self.depth += 1;
        if self.depth > 64 {
            return Err(self.fail("nested too deeply"));
        }
        let value = match self.bytes.get(self.at) {
            Some(b'{') => {
                self.at += 1;
                let mut fields = Vec::new();
                if !self.eat(b'}') {
                    loop {
                        self.space();
                        let key = self.string()?;
                        if !self.eat(b':') {
                            return Err(self.fail("expected `:`"));
                        }
                        fields.push((key, self.value()?));
                        if self.eat(b'}') {
                            break;
                        }
                        if !self.eat(b',') {
                            return Err(self.fail("expected `,` or `}`"));
                        }
                    }
                }
                Json::Object(fields)
            }
            Some(b'[') => {
                self.at += 1;
                let mut items = Vec::new();
                if !self.eat(b']') {
                    loop {
                        items.push(self.value()?);
                        if self.eat(b']') {
                            break;
                        }
                        if !self.eat(b',') {
                            return Err(self.fail("expected `,` or `]`"));
                        }
                    }
                }
                Json::Array(items)
            }
            Some(b'"') => Json::String(self.string()?),
            Some(b't') => self.word("true", Json::Bool(true))?,
            Some(b'f') => self.word("false", Json::Bool(false))?,
            Some(b'n') => self.word("null", Json::Null)?,
            Some(_) => self.number()?,
            None => return Err(self.fail("unexpected end")),
        };
        self.depth -= 1;
        Ok(value)
    }

    fn word(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.bytes[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(self.fail("unexpected word"))
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.at;
        while self
            .bytes
            .get(self.at)
            .is_some_and(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            self.at += 1;
        }
        std::str::from_utf8(&self.bytes[start..self.at])
            .ok()
            .and_then(|text| text.parse::<f64>().ok())
            .filter(|value| value.is_finite())
            .map(Json::Number)
            .ok_or_else(|| self.fail("expected a value"))
    }

    fn string(&mut self) -> Result<String, String> {
        if self.bytes.get(self.at) != Some(&b'"') {
            return Err(self.fail("expected a string"));
        }
        self.at += 1;
        let mut out = Vec::new();
        loop {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(self.fail("unterminated string"));
            };
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let Some(&escape) = self.bytes.get(self.at) else {
                        return Err(self.fail("unterminated string"));
                    };
                    self.at += 1;
                    let c = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = self
                                .bytes
                                .get(self.at..self.at + 4)
                                .and_then(|hex| std::str::from_utf8(hex).ok())
                                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                                .ok_or_else(|| self.fail("bad \\u escape"))?;
                            self.at += 4;
                            // Surrogate halves are not characters; they are not needed here.
                            char::from_u32(hex).unwrap_or('\u{fffd}')
                        }
                        _ => return Err(self.fail("bad escape")),
                    };
                    let mut buffer = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buffer).as_bytes());
                }
                byte => out.push(byte),
            }
        }
        String::from_utf8(out).map_err(|_| self.fail("invalid UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::LATENCY_NS_MAX;

    fn histogram(micros: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut histogram = Histogram::<u64>::new_with_bounds(1, LATENCY_NS_MAX, 3).unwrap();
        for value in micros {
            histogram.record(value * 1000).unwrap();
        }
        histogram
    }

    /// A small XML well-formedness check: balanced tags, quoted attributes, escaped text.
    fn assert_well_formed(xml: &str) {
        let body = xml
            .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
            .expect("XML declaration");
        let mut stack: Vec<String> = Vec::new();
        let mut rest = body;
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            check_text(text);
            assert!(
                !stack.is_empty() || text.trim().is_empty(),
                "text outside the root: {text:?}"
            );
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            rest = &rest[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let (name, attributes) = tag.split_once(' ').unwrap_or((tag, ""));
            assert!(
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                "bad tag name {name:?}"
            );
            check_attributes(attributes);
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert_eq!(roots, 1, "one root element");
    }

    fn check_text(text: &str) {
        assert!(!text.contains('>'), "unescaped > in {text:?}");
        let mut parts = text.split('&');
        parts.next();
        for part in parts {
            let entity = part.split(';').next().unwrap();
            assert!(
                ["amp", "lt", "gt", "quot", "apos"].contains(&entity),
                "bad entity in {text:?}"
            );
        }
    }

    fn check_attributes(mut attributes: &str) {
        let mut names = Vec::new();
        loop {
            attributes = attributes.trim_start();
            if attributes.is_empty() {
                break;
            }
            let (name, after) = attributes.split_once("=\"").expect("attribute=\"value\"");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
                "bad attribute name {name:?}"
            );
            assert!(!names.contains(&name), "duplicate attribute {name}");
            names.push(name);
            let (value, after) = after.split_once('"').expect("closing quote");
            assert!(!value.contains('<'), "< in attribute {value:?}");
            check_text(value);
            attributes = after;
        }
    }

    fn sample_series() -> Vec<Series> {
        vec![
            Series::from_histogram("nginx", &histogram(100..=2000)),
            Series::from_histogram("pinion <fast> & \"good\"", &histogram(50..=1000)),
            Series {
                label: "redis".into(),
                points: vec![(0.0, 120.0), (50.0, 967.0), (99.0, 4863.0), (100.0, 8511.0)],
            },
        ]
    }

    #[test]
    fn svg_is_well_formed_and_has_every_series() {
        for scale in [YScale::Log, YScale::Linear] {
            let series = sample_series();
            let svg = svg("latency <by> percentile & more", &series, scale);
            assert_well_formed(&svg);
            assert_eq!(svg.matches("<polyline ").count(), 3, "{svg}");
            assert!(svg.contains(r#"data-label="nginx""#));
            assert!(svg.contains(r#"data-label="redis""#));
            assert!(svg.contains("pinion &lt;fast&gt; &amp; &quot;good&quot;"));
            assert!(svg.contains("latency &lt;by&gt; percentile &amp; more"));
            // Legend entries with the percentiles.
            assert!(
                svg.contains("nginx: p50 1.05ms, p99 1.98ms, p99.9 2ms"),
                "{svg}"
            );
            assert!(
                svg.contains("good&quot;: p50 525µs, p99 991µs, p99.9 1ms"),
                "{svg}"
            );
            assert!(
                svg.contains("redis: p50 967µs, p99 4.86ms, p99.9 8.51ms"),
                "{svg}"
            );
            for label in ["0%", "50%", "90%", "99%", "99.9%", "99.99%"] {
                assert!(svg.contains(&format!(">{label}</text>")), "{label}");
            }
        }
    }

    #[test]
    fn series_points_stay_inside_the_plot() {
        let svg = svg("t", &sample_series(), YScale::Log);
        for polyline in svg.split("points=\"").skip(1) {
            let points = polyline.split('"').next().unwrap();
            let mut last_x = f64::NEG_INFINITY;
            for point in points.split(' ') {
                let (x, y) = point.split_once(',').unwrap();
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((LEFT..=WIDTH - RIGHT).contains(&x), "{x}");
                assert!((TOP..=HEIGHT - BOTTOM).contains(&y), "{y}");
                assert!(x >= last_x, "x ascends");
                last_x = x;
            }
            // Every series reaches the right edge (99.99 %): the last point is the max.
            assert_eq!(last_x, WIDTH - RIGHT);
        }
    }

    #[test]
    fn empty_inputs_still_make_a_document() {
        assert_well_formed(&svg("nothing", &[], YScale::Log));
        let empty = Series::from_histogram("empty", &histogram([]));
        assert!(empty.points.is_empty());
        let svg = svg("one empty", &[empty], YScale::Linear);
        assert_well_formed(&svg);
        assert_eq!(svg.matches("<polyline ").count(), 1);
    }

    #[test]
    fn percentile_list_for_the_json_summary() {
        let histogram = histogram(1..=10_000);
        let points = percentile_points(&histogram);
        assert_eq!(points.len(), 55);
        let close = |a: f64, b: f64, tolerance: f64| (a - b).abs() <= tolerance;
        let at = |percentile: f64| {
            let point = points.iter().find(|(p, _)| close(*p, percentile, 1e-9));
            point.expect("listed").1
        };
        assert_eq!(points[0], (0.0, 1.0));
        assert!(close(at(50.0), 5000.0, 5.0));
        assert!(close(at(90.0), 9000.0, 10.0));
        assert!(close(at(99.0), 9900.0, 10.0));
        assert!(close(at(99.999), 10_000.0, 10.0));
        assert_eq!(points.last().unwrap().0, 100.0);
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        let json = percentile_points_json(&histogram);
        assert!(json.starts_with("[[0, 1.000], [20.56718, "), "{json}");
        assert!(json.contains("], [90, 9"), "{json}");
        assert!(json.contains("], [99.999, 10"), "{json}");
        assert!(json.contains("], [100, 10"), "{json}");
        assert_eq!(percentile_points_json(&Histogram::new(3).unwrap()), "[]");
        // What the JSON holds reads back as the same points.
        let summary = format!(r#"{{"mode": "raw", "percentiles_us": {json}}}"#);
        let back = parse_points(&summary).unwrap();
        assert_eq!(back.len(), points.len());
        for ((p, us), (bp, bus)) in points.iter().zip(&back) {
            assert!((p - bp).abs() < 1e-4 && (us - bus).abs() < 1e-3);
        }
    }

    #[test]
    fn reads_old_summaries_and_hgrm_files() {
        let old = r#"{"mode": "raw", "errors_by_kind": {"timeout": 2}, "url": "http://x/\u00e9\"",
            "latency_us": {"p50": 10.5, "p90": 20, "p99": 30, "p999": 40, "max": 50, "mean": 1e1,
            "count": 7}, "ws": null, "ok": true}"#;
        assert_eq!(
            parse_points(old).unwrap(),
            vec![
                (50.0, 10.5),
                (90.0, 20.0),
                (99.0, 30.0),
                (99.9, 40.0),
                (100.0, 50.0)
            ]
        );
        let empty = r#"{"latency_us": {"p50": 0, "max": 0, "count": 0}}"#;
        assert!(
            parse_points(empty)
                .unwrap_err()
                .contains("no latency samples")
        );
        assert!(parse_points(r#"{"mode": "raw"}"#).is_err());
        assert!(parse_points(r#"{"latency_us": "#).is_err());
        assert!(parse_points(r#"{"a": 1} x"#).is_err());

        let hgrm = crate::report::hgrm(&histogram(1..=1000));
        let points = parse_points(&hgrm).unwrap();
        assert_eq!(points.first(), Some(&(0.0, 1.0)));
        assert_eq!(points.last(), Some(&(100.0, 1000.0)));
        // redis-benchmark's distribution converted by the comparison script.
        let converted = "0.120 0.000000 1\n0.967 0.500000 10057\n8.511 1.000000 20000\n";
        assert_eq!(
            parse_points(converted).unwrap(),
            vec![(0.0, 120.0), (50.0, 967.0), (100.0, 8511.0)]
        );
        assert!(parse_points("Value Percentile\n1.0 abc 3\n").is_err());
    }

    #[test]
    fn input_labels() {
        assert_eq!(
            split_input("out/nginx.json"),
            ("nginx".to_string(), "out/nginx.json")
        );
        assert_eq!(
            split_input("node (RivetKit)=out/node.json"),
            ("node (RivetKit)".to_string(), "out/node.json")
        );
        assert_eq!(split_input("=x.json"), ("=x".to_string(), "=x.json"));
    }

    #[test]
    fn labels_and_axes() {
        assert_eq!(format_micros(754.2), "754µs");
        assert_eq!(format_micros(2064.0), "2.06ms");
        assert_eq!(format_micros(12.5), "12.5µs");
        assert_eq!(format_micros(1_500_000.0), "1.5s");
        assert_eq!(format_micros(1000.0), "1ms");
        assert_eq!(format_micros(0.0), "0");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(std::f64::consts::LOG10_2), "50%");
        assert_eq!(linear_step(10_500.0), 2000.0);
        assert_eq!(linear_step(7.0), 1.0);
        let axis = Axis::new(YScale::Log, &[vec![(0.0, 120.0), (4.0, 8511.0)]]);
        assert_eq!((axis.low, axis.high), (100.0, 10_000.0));
        assert!((axis.fraction(1000.0) - 0.5).abs() < 1e-9);
        assert_eq!(nines(99.9).round(), 3.0);
        assert_eq!(nines(100.0), f64::INFINITY);
    }
}
