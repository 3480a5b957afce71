//! Writing a run's results: the rows (JSON lines and CSV), `machine.json`,
//! and the experiment as it was run. The report module (Polars tables and
//! charts) builds on these.

use super::machine::Machine;
use super::row::ResultRow;
use super::spec::Experiment;
use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the report needs to know besides the rows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunMeta {
    pub experiment: Experiment,
    /// The machine the cells were measured on ([`Machine`] as JSON).
    pub machine: serde_json::Value,
}

impl RunMeta {
    /// The machine description for a run in `dir`: when nothing was measured
    /// (every cell came from the resume file) the existing `machine.json`
    /// stays, since it describes where the numbers were taken.
    pub fn machine_for(dir: &Path, measured: usize, detected: &Machine) -> serde_json::Value {
        if measured == 0
            && let Ok(b) = std::fs::read(dir.join("machine.json"))
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
        {
            return v;
        }
        serde_json::to_value(detected).unwrap_or(serde_json::Value::Null)
    }
}

fn json_err(e: serde_json::Error) -> Error {
    Error::invalid(format!("serializing results: {e}"))
}

fn csv_field(v: &serde_json::Value) -> String {
    let s = match v {
        serde_json::Value::Null => return String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s }
}

/// Column names of [`ResultRow`], in declaration order.
pub fn columns() -> Vec<String> {
    // serde_json's Value sorts keys, but serializing the struct itself to a
    // string keeps declaration order: read the top-level keys out of that
    let s = serde_json::to_string(&ResultRow::default()).unwrap_or_default();
    let mut cols = Vec::new();
    let mut depth = 0;
    let mut in_str = false;
    let mut cur = String::new();
    let mut expect_key = true;
    let mut esc = false;
    for ch in s.chars() {
        if in_str {
            if esc {
                esc = false;
                cur.push(ch);
            } else if ch == '\\' {
                esc = true;
            } else if ch == '"' {
                in_str = false;
                if depth == 1 && expect_key {
                    cols.push(std::mem::take(&mut cur));
                    expect_key = false;
                }
                cur.clear();
            } else {
                cur.push(ch);
            }
            continue;
        }
        match ch {
            '"' => in_str = true,
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ',' if depth == 1 => expect_key = true,
            _ => {}
        }
    }
    cols
}

/// `results.csv`: one line per row, columns in the row's declaration order.
pub fn write_csv(path: &Path, rows: &[ResultRow]) -> Result<()> {
    let cols = columns();
    crate::io::write_atomic(path, |w| {
        writeln!(w, "{}", cols.join(","))?;
        for r in rows {
            let v = serde_json::to_value(r).map_err(std::io::Error::other)?;
            let line: Vec<String> =
                cols.iter().map(|c| csv_field(v.get(c).unwrap_or(&serde_json::Value::Null))).collect();
            writeln!(w, "{}", line.join(","))?;
        }
        Ok(())
    })
}

/// `results.jsonl`: one JSON object per row.
pub fn write_jsonl(path: &Path, rows: &[ResultRow]) -> Result<()> {
    crate::io::write_atomic(path, |w| {
        for r in rows {
            serde_json::to_writer(&mut *w, r).map_err(std::io::Error::other)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}

/// Read rows back from `results.jsonl`.
pub fn read_jsonl(path: &Path) -> Result<Vec<ResultRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::invalid(format!("{} line {}: {e}", path.display(), i + 1)))
        })
        .collect()
}

/// Write the rows and metadata of a run into `dir`; returns the files written.
pub fn write_results(dir: &Path, rows: &[ResultRow], meta: &RunMeta) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut written = Vec::new();
    let p = dir.join("results.jsonl");
    write_jsonl(&p, rows)?;
    written.push(p);
    let p = dir.join("results.csv");
    write_csv(&p, rows)?;
    written.push(p);
    let p = dir.join("machine.json");
    let json = serde_json::to_vec_pretty(&meta.machine).map_err(json_err)?;
    crate::io::write_atomic(&p, |w| w.write_all(&json))?;
    written.push(p);
    let p = dir.join("experiment.json");
    let json = serde_json::to_vec_pretty(&meta.experiment).map_err(json_err)?;
    crate::io::write_atomic(&p, |w| w.write_all(&json))?;
    written.push(p);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_follow_the_struct() {
        let c = columns();
        assert_eq!(c.first().map(String::as_str), Some("experiment"));
        assert_eq!(c.last().map(String::as_str), Some("note"));
        assert!(c.iter().any(|x| x == "compress_mbps_median"));
    }

    #[test]
    fn csv_quotes() {
        assert_eq!(csv_field(&serde_json::json!("a,b")), "\"a,b\"");
        assert_eq!(csv_field(&serde_json::json!(null)), "");
        assert_eq!(csv_field(&serde_json::json!(1.5)), "1.5");
    }
}
