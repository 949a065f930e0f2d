//! The markdown report: one row per metric with every contender's value
//! and the ratios, netchan over TLS against netchan in plaintext, a table
//! of each child process's peak RSS and CPU time, and numbered notes (why
//! a cell is n/a, what failed, what the raw baseline does).

use std::collections::HashMap;
use std::fmt::Write;

use crate::child::ChildResult;
use crate::spec::{Better, Contender, Metric, NotApplicable, Unit, Workload};

/// Everything the parent learned about one (workload, contender).
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    NotApplicable(NotApplicable),
    /// One result per process (two for idle workloads: server, client).
    Ran(Vec<(String, ChildResult)>),
}

#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) header: Vec<String>,
    pub(crate) contenders: Vec<Contender>,
    pub(crate) workloads: Vec<Workload>,
    pub(crate) outcomes: HashMap<(WorkloadKey, Contender), Outcome>,
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

impl Report {
    /// The value of one metric for one contender, or the cell text (with
    /// its note) that explains why there is none.
    fn cell(
        &self,
        w: Workload,
        key: &str,
        c: Contender,
        notes: &mut Notes,
    ) -> (Option<f64>, String) {
        match self.outcomes.get(&(w.id(), c)) {
            None => (None, "–".into()),
            Some(Outcome::NotApplicable(na)) => {
                let n = notes.mark(na.text().to_owned());
                (None, format!("n/a{}", sup(n)))
            }
            Some(Outcome::Ran(runs)) => {
                let marks: Vec<String> = runs
                    .iter()
                    .filter_map(|(role, r)| {
                        let e = r.error.as_ref()?;
                        Some(notes.mark(format!("{c}, {w} ({role}): {e}")).to_string())
                    })
                    .collect();
                if !marks.is_empty() {
                    return (None, format!("**FAILED**<sup>{}</sup>", marks.join(",")));
                }
                let v = runs.iter().find_map(|(_, r)| r.metrics.get(key).copied());
                match v {
                    Some(v) if v.is_finite() => (Some(v), String::new()),
                    _ => (None, "?".into()),
                }
            }
        }
    }

    /// Appends one value cell of metric `m` to `row`: the value, or why
    /// there is none. Returns the value.
    fn value_cell(
        &self,
        w: Workload,
        m: &Metric,
        c: Contender,
        notes: &mut Notes,
        row: &mut String,
    ) -> Option<f64> {
        let (v, text) = self.cell(w, m.key, c, notes);
        match v {
            Some(v) => {
                let _ = write!(row, " {} |", fmt_value(m.unit, v));
            }
            None => {
                let _ = write!(row, " {text} |");
            }
        }
        v
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let mut notes = Notes::default();
        for h in &self.header {
            let _ = writeln!(out, "{h}");
        }
        let _ = writeln!(out);
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
        let mut head = String::from("| workload | unit |");
        let mut rule = String::from("|---|---|");
        for c in &self.contenders {
            let _ = write!(head, " {c} |");
            rule.push_str("---:|");
        }
        for (a, b) in &pairs {
            let _ = write!(head, " {a}/{b} |");
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{head}\n{rule}");
        for &w in &self.workloads {
            for m in w.metrics() {
                let mut row = format!("| {} | {} {} |", m.label, m.unit.label(), arrow(m.better));
                let mut values = HashMap::new();
                for &c in &self.contenders {
                    if let Some(v) = self.value_cell(w, m, c, &mut notes, &mut row) {
                        values.insert(c, v);
                    }
                }
                for (a, b) in &pairs {
                    row.push_str(&ratio_cell(values.get(a), values.get(b)));
                }
                let _ = writeln!(out, "{row}");
            }
        }
        let _ = writeln!(
            out,
            "\n↑ higher is better, ↓ lower is better; a ratio is the first contender's value divided by the second's. \
             MB/s is 10^6 bytes of payload per second. \
             Rows starting “TLS:” repeat the plaintext workload of the same name over TLS 1.3 \
             (rustls with ring, a self-signed certificate made in each child): netchan through \
             `Config::tls_server` / `tls_client` with the client pinning that certificate, raw as \
             the same hand-written frames over tokio-rustls. So in TLS rows netchan/raw is netchan \
             over TLS against raw TLS; tarpc and remoc do not run them."
        );
        self.tls_vs_plain(&mut out, &mut notes);

        // Resources of each child process.
        let _ = writeln!(
            out,
            "\n### Peak RSS and CPU time of each contender process\n"
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
                match self.outcomes.get(&(w.id(), c)) {
                    Some(Outcome::Ran(runs)) => {
                        let parts: Vec<String> = runs
                            .iter()
                            .map(|(role, r)| {
                                let who = if runs.len() > 1 {
                                    format!("{role}: ")
                                } else {
                                    String::new()
                                };
                                format!(
                                    "{who}{:.1} MiB, {:.2} s CPU / {:.2} s",
                                    r.stats.peak_rss_kib as f64 / 1024.0,
                                    r.stats.cpu_s(),
                                    r.wall_s
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
        let _ = writeln!(
            out,
            "\nEach cell: peak RSS (VmHWM) of the process, its CPU time (user + system) and its wall time, \
             setup and warm-up included. Timed workloads run server and client in one process; idle \
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
        if !notes.0.is_empty() || !raw_notes.is_empty() {
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
        }
        out
    }

    /// netchan over TLS against netchan in plaintext (and raw TLS against
    /// raw TCP, for scale), for each TLS workload whose plaintext twin ran.
    fn tls_vs_plain(&self, out: &mut String, notes: &mut Notes) {
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
        let _ = writeln!(out, "\n### TLS against plaintext\n");
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
            for m in plain.metrics() {
                let mut row = format!("| {} | {} {} |", m.label, m.unit.label(), arrow(m.better));
                let p = self.value_cell(plain, m, Contender::Netchan, notes, &mut row);
                let t = self.value_cell(w, m, Contender::Netchan, notes, &mut row);
                row.push_str(&ratio_cell(t.as_ref(), p.as_ref()));
                if raw {
                    let p = self.cell(plain, m.key, Contender::Raw, notes).0;
                    let t = self.cell(w, m.key, Contender::Raw, notes).0;
                    row.push_str(&ratio_cell(t.as_ref(), p.as_ref()));
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
