//! The markdown report: one row per metric with every contender's value
//! and the ratios, netchan over TLS against netchan in plaintext, a table
//! of each child process's peak RSS and CPU time, and numbered notes (why
//! a cell is n/a, what failed, what the raw baseline does).

use std::collections::HashMap;
use std::fmt::Write;

use crate::child::ChildResult;
use crate::harness::Flavor;
use crate::spec::{Better, Contender, Metric, NotApplicable, Unit, Workload};

/// Everything the parent learned about one (shape, workload, contender).
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    NotApplicable(NotApplicable),
    /// One entry per round; each holds one result per process (two for
    /// idle workloads: server, client).
    Ran(Vec<Vec<(String, ChildResult)>>),
}

#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) header: Vec<String>,
    pub(crate) contenders: Vec<Contender>,
    pub(crate) workloads: Vec<Workload>,
    pub(crate) flavors: Vec<Flavor>,
    pub(crate) rounds: usize,
    pub(crate) outcomes: HashMap<(Flavor, WorkloadKey, Contender), Outcome>,
}

/// `Workload` as a map key.
pub(crate) type WorkloadKey = &'static str;

/// Numbered notes, each text once.
#[derive(Debug, Default)]
struct Notes(Vec<String>);

impl Notes {
    fn mark(&mut self, text: String) -> usize {
        if let Some(i) = self.0.iter().position(|t| *t == text) {
            return i + 1;
        }
        self.0.push(text);
        self.0.len()
    }
}

fn sup(n: usize) -> String {
    format!("<sup>{n}</sup>")
}

/// The values of one cell over the rounds that ran it without failing.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Option<Spread> {
        v.retain(|x| x.is_finite());
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    fn text(&self, unit: Unit) -> String {
        let med = fmt_value(unit, self.median);
        if self.n < 2 {
            return med;
        }
        let (lo, hi) = (fmt_value(unit, self.min), fmt_value(unit, self.max));
        if lo == hi {
            format!("{med} ({lo})")
        } else {
            format!("{med} ({lo}–{hi})")
        }
    }
}

/// One row of a table: a workload's metric, its CPU per operation, or
/// its thread count.
#[derive(Debug)]
struct Row {
    key: &'static str,
    label: String,
    unit: Unit,
    better: Better,
}

fn rows(w: Workload) -> Vec<Row> {
    let mut out: Vec<Row> = w
        .metrics()
        .iter()
        .map(|m: &Metric| Row {
            key: m.key,
            label: m.label.to_owned(),
            unit: m.unit,
            better: m.better,
        })
        .collect();
    if let Some(op) = w.op_name() {
        out.push(Row {
            key: "cpu_op",
            label: format!("↳ `{}`: CPU per {op} (user + sys, whole process)", w.id()),
            unit: Unit::CpuMicros,
            better: Better::Lower,
        });
    }
    if !w.idle() {
        out.push(Row {
            key: "threads",
            label: format!("↳ `{}`: OS threads of the process (peak)", w.id()),
            unit: Unit::Threads,
            better: Better::Lower,
        });
    }
    out
}

pub(crate) fn fmt_value(unit: Unit, v: f64) -> String {
    if !v.is_finite() {
        return "?".into();
    }
    match unit {
        Unit::Micros => {
            if v < 100.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        }
        Unit::PerSec => {
            if v >= 1e6 {
                format!("{:.2} M", v / 1e6)
            } else if v >= 1e3 {
                format!("{:.1} k", v / 1e3)
            } else {
                format!("{v:.0}")
            }
        }
        Unit::MBps => format!("{v:.0}"),
        Unit::CpuMicros => {
            if v < 1.0 {
                format!("{v:.3}")
            } else if v < 10.0 {
                format!("{v:.2}")
            } else if v < 100.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        }
        Unit::Threads => format!("{v:.0}"),
        Unit::KiB => {
            if v < 10.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.1}")
            }
        }
    }
}

fn fmt_ratio(r: f64) -> String {
    if !r.is_finite() {
        "–".into()
    } else if r >= 100.0 {
        format!("{r:.0}×")
    } else if r >= 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.2}×")
    }
}

fn arrow(b: Better) -> &'static str {
    match b {
        Better::Higher => "↑",
        Better::Lower => "↓",
    }
}

/// A ratio cell: `x / y`, or a dash when either value is missing.
fn ratio_cell(x: Option<&f64>, y: Option<&f64>) -> String {
    match (x, y) {
        (Some(x), Some(y)) if *y > 0.0 => format!(" {} |", fmt_ratio(x / y)),
        _ => " – |".into(),
    }
}

/// One contender's value in a cell: the median, and each round's value
/// (`None` for a round that failed or did not run).
#[derive(Debug, Clone)]
struct Cell {
    median: f64,
    rounds: Vec<Option<f64>>,
}

/// A ratio cell of medians, `x / y`, with the min–max of the per-round
/// ratios in brackets: round i of one contender against round i of the
/// other, which ran next to each other.
fn ratio_cell_rounds(x: Option<&Cell>, y: Option<&Cell>) -> String {
    let (Some(x), Some(y)) = (x, y) else {
        return " – |".into();
    };
    if y.median <= 0.0 {
        return " – |".into();
    }
    let mid = fmt_ratio(x.median / y.median);
    let per: Vec<f64> = x
        .rounds
        .iter()
        .zip(&y.rounds)
        .filter_map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) if *b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
            _ => None,
        })
        .collect();
    if per.len() < 2 {
        return format!(" {mid} |");
    }
    let lo = per.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = per.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let bare = |r: f64| fmt_ratio(r).trim_end_matches('×').to_owned();
    let (lo, hi) = (bare(lo), bare(hi));
    if lo == hi {
        format!(" {mid} ({lo}) |")
    } else {
        format!(" {mid} ({lo}–{hi}) |")
    }
}

impl Report {
    /// The spread of one metric for one contender in one shape, or the
    /// cell text (with its note) that explains why there is none.
    fn cell(
        &self,
        f: Flavor,
        w: Workload,
        key: &str,
        c: Contender,
        notes: &mut Notes,
    ) -> (Option<Spread>, String, Vec<Option<f64>>) {
        match self.outcomes.get(&(f, w.id(), c)) {
            None => (None, "–".into(), Vec::new()),
            Some(Outcome::NotApplicable(na)) => {
                let n = notes.mark(na.text().to_owned());
                (None, format!("n/a{}", sup(n)), Vec::new())
            }
            Some(Outcome::Ran(rounds)) => {
                let mut marks: Vec<String> = Vec::new();
                let mut values = Vec::new();
                let mut per_round = Vec::new();
                for (i, runs) in rounds.iter().enumerate() {
                    let mut ok = true;
                    for (role, r) in runs {
                        if let Some(e) = &r.error {
                            ok = false;
                            let n = notes.mark(format!(
                                "{c}, {w}, shape {}, round {} ({role}): {e}",
                                f.name(),
                                i + 1
                            ));
                            marks.push(n.to_string());
                        }
                    }
                    let v = runs
                        .iter()
                        .find_map(|(_, r)| r.metrics.get(key))
                        .copied()
                        .filter(|_| ok);
                    values.extend(v);
                    per_round.push(v);
                }
                let marks = if marks.is_empty() {
                    String::new()
                } else {
                    format!("<sup>{}</sup>", marks.join(","))
                };
                match Spread::of(values) {
                    Some(sp) if marks.is_empty() => (Some(sp), String::new(), per_round),
                    // Some rounds failed: the others' values, marked.
                    Some(sp) => (
                        Some(sp),
                        format!(
                            "{}/{} rounds, **FAILED** in the others{marks}",
                            sp.n,
                            rounds.len()
                        ),
                        per_round,
                    ),
                    None if !marks.is_empty() => (None, format!("**FAILED**{marks}"), per_round),
                    None => (None, "?".into(), per_round),
                }
            }
        }
    }

    /// Appends one value cell to `row`: the median and spread, or why
    /// there is none. Returns the median and each round's value.
    fn value_cell(
        &self,
        f: Flavor,
        w: Workload,
        r: &Row,
        c: Contender,
        notes: &mut Notes,
        row: &mut String,
    ) -> Option<Cell> {
        let (v, text, rounds) = self.cell(f, w, r.key, c, notes);
        match (v, text.is_empty()) {
            (Some(sp), true) => {
                let _ = write!(row, " {} |", sp.text(r.unit));
            }
            (Some(sp), false) => {
                let _ = write!(row, " {} ({text}) |", sp.text(r.unit));
            }
            (None, _) => {
                let _ = write!(row, " {text} |");
            }
        }
        v.map(|sp| Cell {
            median: sp.median,
            rounds,
        })
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let mut notes = Notes::default();
        for h in &self.header {
            let _ = writeln!(out, "{h}");
        }
        let has = |c: Contender| self.contenders.contains(&c);
        let mut pairs: Vec<(Contender, Contender)> = Vec::new();
        for c in [Contender::Netchan, Contender::Tarpc, Contender::Remoc] {
            if has(c) && has(Contender::Raw) {
                pairs.push((c, Contender::Raw));
            }
        }
        for c in [Contender::Tarpc, Contender::Remoc] {
            if has(Contender::Netchan) && has(c) {
                pairs.push((Contender::Netchan, c));
            }
        }
        let config_note = notes.mark(CONFIG_NOTE.to_owned());
        for &f in &self.flavors {
            let _ = writeln!(out, "\n### Shape `{}`: {}\n", f.name(), f.describe());
            let mut head = String::from("| workload | unit |");
            let mut rule = String::from("|---|---|");
            for c in &self.contenders {
                let sup_cfg = if matches!(c, Contender::Tarpc | Contender::Remoc) {
                    sup(config_note)
                } else {
                    String::new()
                };
                let _ = write!(head, " {c}{sup_cfg} |");
                rule.push_str("---:|");
            }
            for (a, b) in &pairs {
                let _ = write!(head, " {a}/{b} |");
                rule.push_str("---:|");
            }
            let _ = writeln!(out, "{head}\n{rule}");
            for &w in &self.workloads {
                for r in rows(w) {
                    let mut row =
                        format!("| {} | {} {} |", r.label, r.unit.label(), arrow(r.better));
                    let mut values = HashMap::new();
                    for &c in &self.contenders {
                        if let Some(v) = self.value_cell(f, w, &r, c, &mut notes, &mut row) {
                            values.insert(c, v);
                        }
                    }
                    for (a, b) in &pairs {
                        row.push_str(&ratio_cell_rounds(values.get(a), values.get(b)));
                    }
                    let _ = writeln!(out, "{row}");
                }
            }
            self.tls_vs_plain(f, &mut out, &mut notes);
        }
        let _ = writeln!(
            out,
            "\n↑ higher is better, ↓ lower is better; a ratio is the first contender's median divided by the second's, with in brackets the \
             min–max of the per-round ratios (round i of one against round i of the other, which ran next to each other). \
             A cell is the median over {} round(s), with the spread (min–max) in brackets. \
             MB/s is 10^6 bytes of payload per second. \
             “CPU per …” is the user + system CPU time of the whole child process (server and client sides, \
             every thread including tokio's blocking pool), read with `CLOCK_PROCESS_CPUTIME_ID` at both ends of the \
             measuring window (setup and warm-up excluded), divided by the operations completed in the window. \
             “OS threads” is the peak of `Threads:` in `/proc/self/status`, sampled every 20 ms from the end of \
             setup to the end of the window. It counts every thread of the process: the harness's measuring \
             (main) thread, the runtime threads of the shape (`current`: one per side; `multi`: each side's \
             `block_on` thread and its worker; `shared`: the two workers), and whatever the contender starts \
             (tokio's blocking pool, remoc's (de)serialization threads). The baseline is 3 in `current` and `shared`. \
             The idle rows are KiB of RSS per connection (or channel): each side's growth from when its first one \
             was open to when all were, divided by the number opened in between. \
             Rows starting “TLS:” repeat the plaintext workload of the same name over TLS 1.3 \
             (rustls with ring, a self-signed certificate made in each child): netchan through \
             `Config::tls_server` / `tls_client` with the client pinning that certificate, raw as \
             the same hand-written frames over tokio-rustls. So in TLS rows netchan/raw is netchan \
             over TLS against raw TLS; tarpc and remoc do not run them.",
            self.rounds
        );

        // Resources of each child process.
        for &f in &self.flavors {
            let _ = writeln!(
                out,
                "\n### Peak RSS and CPU time of each contender process, shape `{}`\n",
                f.name()
            );
            let mut head = String::from("| workload |");
            let mut rule = String::from("|---|");
            for c in &self.contenders {
                let _ = write!(head, " {c} |");
                rule.push_str("---:|");
            }
            let _ = writeln!(out, "{head}\n{rule}");
            for &w in &self.workloads {
                let mut row = format!("| {} |", w.id());
                for &c in &self.contenders {
                    match self.outcomes.get(&(f, w.id(), c)) {
                        Some(Outcome::Ran(rounds)) => {
                            let roles: Vec<&str> = rounds
                                .first()
                                .map(|r| r.iter().map(|(role, _)| role.as_str()).collect())
                                .unwrap_or_default();
                            let parts: Vec<String> = roles
                                .iter()
                                .map(|role| {
                                    let of = |get: &dyn Fn(&ChildResult) -> f64| {
                                        Spread::of(
                                            rounds
                                                .iter()
                                                .filter_map(|r| {
                                                    r.iter()
                                                        .find(|(x, _)| x == role)
                                                        .map(|(_, r)| get(r))
                                                })
                                                .collect(),
                                        )
                                        .map_or(f64::NAN, |s| s.median)
                                    };
                                    let who = if roles.len() > 1 {
                                        format!("{role}: ")
                                    } else {
                                        String::new()
                                    };
                                    format!(
                                        "{who}{:.1} MiB, {:.2} s CPU / {:.2} s",
                                        of(&|r| r.stats.peak_rss_kib as f64 / 1024.0),
                                        of(&|r| r.stats.cpu_s()),
                                        of(&|r| r.wall_s)
                                    )
                                })
                                .collect();
                            let _ = write!(row, " {} |", parts.join("<br>"));
                        }
                        Some(Outcome::NotApplicable(_)) => row.push_str(" n/a |"),
                        None => row.push_str(" – |"),
                    }
                }
                let _ = writeln!(out, "{row}");
            }
        }
        let _ = writeln!(
            out,
            "\nEach cell: peak RSS (VmHWM) of the process, its CPU time (user + system) and its wall time, \
             setup and warm-up included, medians over the rounds. Timed workloads run server and client in one process; idle \
             workloads run them as two."
        );

        // How the raw baseline works, per workload shown.
        let mut raw_notes = Vec::new();
        if has(Contender::Raw) {
            for &w in &self.workloads {
                if let Some(t) = w.raw_note()
                    && !raw_notes.contains(&t)
                {
                    raw_notes.push(t);
                }
            }
        }
        let _ = writeln!(out, "\n### Notes\n");
        for (i, n) in notes.0.iter().enumerate() {
            let _ = writeln!(out, "{}. {n}", i + 1);
        }
        if !raw_notes.is_empty() {
            let _ = writeln!(out);
            for t in raw_notes {
                let _ = writeln!(out, "* {t}");
            }
        }
        out
    }

    /// netchan over TLS against netchan in plaintext (and raw TLS against
    /// raw TCP, for scale), for each TLS workload whose plaintext twin ran.
    fn tls_vs_plain(&self, f: Flavor, out: &mut String, notes: &mut Notes) {
        let twins: Vec<Workload> = self
            .workloads
            .iter()
            .copied()
            .filter(|w| w.tls() && self.workloads.contains(&w.plain()))
            .collect();
        if twins.is_empty() || !self.contenders.contains(&Contender::Netchan) {
            return;
        }
        let raw = self.contenders.contains(&Contender::Raw);
        let _ = writeln!(out, "\n#### TLS against plaintext, shape `{}`\n", f.name());
        let mut head = String::from(
            "| workload | unit | netchan plaintext | netchan TLS | netchan TLS/plaintext |",
        );
        let mut rule = String::from("|---|---|---:|---:|---:|");
        if raw {
            head.push_str(" raw TLS/TCP |");
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{head}\n{rule}");
        for w in twins {
            let plain = w.plain();
            for r in rows(plain).into_iter().filter(|r| r.key != "threads") {
                let mut row = format!("| {} | {} {} |", r.label, r.unit.label(), arrow(r.better));
                let p = self.value_cell(f, plain, &r, Contender::Netchan, notes, &mut row);
                let t = self.value_cell(f, w, &r, Contender::Netchan, notes, &mut row);
                row.push_str(&ratio_cell(
                    t.as_ref().map(|c| &c.median),
                    p.as_ref().map(|c| &c.median),
                ));
                if raw {
                    let p = self.cell(f, plain, r.key, Contender::Raw, notes).0;
                    let t = self.cell(f, w, r.key, Contender::Raw, notes).0;
                    row.push_str(&ratio_cell(
                        t.map(|s| s.median).as_ref(),
                        p.map(|s| s.median).as_ref(),
                    ));
                }
                let _ = writeln!(out, "{row}");
            }
        }
        let _ = writeln!(
            out,
            "\nEach contender over TLS divided by itself in plaintext, in the same run: above 1× a \
             latency (↓) grew, below 1× a throughput (↑) fell. raw TLS/TCP is what TLS costs the \
             hand-written baseline, a reference for netchan's own ratio."
        );
    }
}

/// How tarpc and remoc are set up: the footnote of their columns.
pub(crate) const CONFIG_NOTE: &str = "How the contenders are configured. \
    **tarpc 0.38**: defaults: `client::Config::default()` (1,000 requests in flight at most, \
    a pending-request buffer of 100), `BaseChannel::with_defaults`, bincode over tarpc's \
    `serde_transport` with a `LengthDelimitedCodec` whose frame limit is raised to 32 MiB \
    (tokio-util's default 8 MiB would fit every message of the rows tarpc runs too); every request runs in its own spawned task, \
    as tarpc's examples do. \
    **remoc 0.20**: defaults, as its documentation recommends (“In most cases the default \
    configuration (`Cfg::default`) is recommended”): `Cfg::default()` (64 kB I/O buffers, \
    512 kB `max_data_size` above which remoc (de)serializes on a separate thread), \
    the default codec, `rtc` servers as `ServerShared` with 128 calls in parallel, \
    `rch::mpsc` with 1,024 local slots in the one-way rows, `max_ports` raised only for idle-chan, the item limit of head-of-line's 16 MiB channel raised to 32 MiB. \
    **netchan**: `Config::default()`. **raw**: see the bullet points below.";

#[cfg(test)]
mod tests {
    use super::{Cell, ratio_cell_rounds};

    fn cell(median: f64, rounds: &[Option<f64>]) -> Cell {
        Cell {
            median,
            rounds: rounds.to_vec(),
        }
    }

    #[test]
    fn a_ratio_gives_the_per_round_ratios_of_rounds_both_ran() {
        // Medians 2 and 1; per round 4/2, 2/1 and (round 3 failed for b)
        // nothing: the range is 2.00 only.
        let a = cell(2.0, &[Some(4.0), Some(2.0), Some(1.0)]);
        let b = cell(1.0, &[Some(2.0), Some(1.0), None]);
        assert_eq!(ratio_cell_rounds(Some(&a), Some(&b)), " 2.00× (2.00) |");
        // Rounds that pair slow with slow and fast with fast.
        let a = cell(3.0, &[Some(3.0), Some(6.0), Some(2.0)]);
        let b = cell(2.0, &[Some(2.0), Some(2.0), Some(1.0)]);
        assert_eq!(
            ratio_cell_rounds(Some(&a), Some(&b)),
            " 1.50× (1.50–3.00) |"
        );
        // One round only: no range.
        let a = cell(3.0, &[Some(3.0)]);
        let b = cell(2.0, &[Some(2.0)]);
        assert_eq!(ratio_cell_rounds(Some(&a), Some(&b)), " 1.50× |");
        assert_eq!(ratio_cell_rounds(Some(&a), None), " – |");
    }
}
