//! Medians, spreads and Markdown tables.

use std::fmt::Write as _;
use std::path::Path;

/// Samples of one measure: their median and spread.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    pub fn median(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub fn min(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    }

    /// `median (min–max)` with `fmt` for each number.
    pub fn show(&self, fmt: impl Fn(f64) -> String) -> String {
        format!("{} ({}–{})", fmt(self.median()), fmt(self.min()), fmt(self.max()))
    }
}

/// A number with thousands separators.
pub fn int(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Milliseconds with two decimals, from seconds.
pub fn ms(secs: f64) -> String {
    format!("{:.2} ms", secs * 1e3)
}

/// Microseconds, from seconds.
pub fn us(secs: f64) -> String {
    format!("{:.0} µs", secs * 1e6)
}

/// A ratio as `0.93×`.
pub fn ratio(v: f64) -> String {
    format!("{v:.2}×")
}

/// A Markdown table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}|", vec!["---"; header.len()].join("|"));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// Writes a fragment of BENCHMARKS.md and echoes it.
pub fn write(dir: &Path, name: &str, text: &str) {
    println!("{text}");
    if let Err(e) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(dir.join(format!("{name}.md")), text)) {
        eprintln!("cannot write {name}.md: {e}");
    }
}
