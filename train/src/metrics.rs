//! Metrics of a run: `metrics.jsonl` (one JSON object per logged step or evaluation, appended
//! and flushed as it goes) and `loss.svg`, a loss curve redrawn at each evaluation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// Training progress at an update.
    Train {
        step: u64,
        tokens: u64,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        lambda: f64,
        tok_per_s: f64,
        elapsed_s: f64,
        /// The terms of a composite loss (distillation: `ce`, `kl`, ...).
        #[serde(flatten, default)]
        extra: BTreeMap<String, f64>,
    },
    /// A validation pass.
    Eval {
        step: u64,
        val_loss: f64,
        val_ppl: f64,
        /// The objective's own validation metrics (distillation: `kl_to_teacher`).
        #[serde(flatten, default)]
        extra: BTreeMap<String, f64>,
    },
}

/// Appends records to `metrics.jsonl`.
pub struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    /// Opens (appending) `RUN/metrics.jsonl`. After a resume, lines past `step` (written after
    /// the checkpoint the run resumes from) are dropped first, so the log has no duplicates.
    pub fn open(run: &Path, resume_step: Option<u64>) -> Result<MetricsLog> {
        let path = run.join("metrics.jsonl");
        if let Some(step) = resume_step
            && path.exists()
        {
            let kept: String = read(&path)?
                .into_iter()
                .filter(|r| record_step(r) <= step)
                .map(|r| serde_json::to_string(&r).expect("record serializes") + "\n")
                .collect();
            tern_pack::fsutil::write_atomic(&path, kept.as_bytes())?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        Ok(MetricsLog { path, file })
    }

    /// Appends one record.
    pub fn push(&mut self, r: &Record) -> Result<()> {
        let line = serde_json::to_string(r).expect("record serializes") + "\n";
        self.file.write_all(line.as_bytes()).at(&self.path)?;
        self.file.flush().at(&self.path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn record_step(r: &Record) -> u64 {
    match r {
        Record::Train { step, .. } | Record::Eval { step, .. } => *step,
    }
}

/// Reads every record of a metrics file (lines that do not parse are skipped: a line cut by a
/// kill).
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).at(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

/// Draws training and validation loss against steps as an SVG (`floor`: a known best
/// achievable loss, drawn as a dashed line).
pub fn plot_svg(records: &[Record], floor: Option<f64>, title: &str) -> String {
    let train: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Train { step, loss, .. } => Some((*step as f64, *loss)),
            _ => None,
        })
        .collect();
    let val: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Eval { step, val_loss, .. } => Some((*step as f64, *val_loss)),
            _ => None,
        })
        .collect();
    let (w, h, left, right, top, bottom) = (720.0, 420.0, 60.0, 20.0, 36.0, 44.0);
    let all = train.iter().chain(&val);
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let mut y_min = all.clone().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut y_max = all.map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    if let Some(f) = floor {
        y_min = y_min.min(f);
    }
    if !y_min.is_finite() || !y_max.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    y_min = y_min.min(y_max - 1e-3).max(0.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let sx = |x: f64| left + x / x_max * pw;
    let sy = |y: f64| top + (1.0 - (y - y_min) / (y_max - y_min)) * ph;
    let poly = |pts: &[(f64, f64)]| {
        pts.iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{left}" y="22" font-size="14">{title}</text>
<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>
"##
    );
    for i in 0..=4 {
        let y = y_min + (y_max - y_min) * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{y:.2}</text><line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#eee"/>"##,
            left - 6.0,
            sy(y) + 4.0,
            left + pw,
            sy(y),
            sy(y)
        );
        let x = x_max * i as f64 / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{x:.0}</text>"#,
            sx(x),
            top + ph + 16.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">step</text>"#,
        left + pw / 2.0,
        h - 8.0
    );
    if let Some(f) = floor {
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#2a2" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" fill="#2a2" text-anchor="end">best achievable {f:.3}</text>"##,
            left + pw,
            sy(f),
            sy(f),
            left + pw - 4.0,
            sy(f) - 4.0
        );
    }
    if train.len() > 1 {
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="#36c" stroke-width="1.5" points="{}"/>"##,
            poly(&train)
        );
    }
    if !val.is_empty() {
        let _ = writeln!(
            s,
            r##"<polyline fill="none" stroke="#d62" stroke-width="2" points="{}"/>"##,
            poly(&val)
        );
        for &(x, y) in &val {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="#d62"/>"##,
                sx(x),
                sy(y)
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<text x="{:.1}" y="{:.1}" fill="#36c" text-anchor="end">train loss</text><text x="{:.1}" y="{:.1}" fill="#d62" text-anchor="end">validation loss</text>"##,
        left + pw - 4.0,
        top + 16.0,
        left + pw - 4.0,
        top + 32.0
    );
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_drops_records_after_the_checkpoint_and_plot_draws_both_curves() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::open(dir.path(), None).unwrap();
        for step in 1..=5 {
            log.push(&Record::Train {
                step,
                tokens: step * 10,
                loss: 5.0 / step as f64,
                lr: 1e-3,
                grad_norm: 1.0,
                lambda: 1.0,
                tok_per_s: 100.0,
                elapsed_s: step as f64,
                extra: BTreeMap::from([("kl".to_string(), step as f64)]),
            })
            .unwrap();
        }
        log.push(&Record::Eval {
            step: 5,
            val_loss: 1.5,
            val_ppl: 1.5f64.exp(),
            extra: BTreeMap::new(),
        })
        .unwrap();
        drop(log);
        let _log = MetricsLog::open(dir.path(), Some(3)).unwrap();
        let records = read(&dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(records.len(), 3);
        match &records[2] {
            Record::Train { step: 3, extra, .. } => assert_eq!(extra["kl"], 3.0),
            other => panic!("unexpected record {other:?}"),
        }
        let svg = plot_svg(
            &read(&dir.path().join("metrics.jsonl")).unwrap(),
            Some(0.5),
            "t",
        );
        assert!(svg.starts_with("<svg") && svg.contains("polyline") && svg.contains("0.500"));
    }
}
