//! Accuracy over a folder of labelled logs (`manifest.json`, as in fixtures/ci-logs).

use std::path::Path;

use serde::Deserialize;

use super::diagnose;

#[derive(Debug, Deserialize)]
pub struct Labelled {
    pub file: String,
    pub failure_class: String,
    pub tool: String,
    pub culprit_file: Option<String>,
    pub culprit_line: Option<u32>,
}

#[derive(Debug)]
pub struct Outcome {
    pub file: String,
    pub bytes: usize,
    pub class_ok: bool,
    pub tool_ok: bool,
    pub culprit_file_ok: bool,
    pub culprit_line_ok: bool,
    pub got: String,
    pub want: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a manifest: {source}")]
    Manifest {
        path: String,
        source: serde_json::Error,
    },
}

pub fn evaluate(dir: &Path) -> Result<Vec<Outcome>, EvaluateError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| EvaluateError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let manifest: Vec<Labelled> =
        serde_json::from_slice(&read("manifest.json")?).map_err(|source| {
            EvaluateError::Manifest {
                path: dir.join("manifest.json").display().to_string(),
                source,
            }
        })?;
    let mut out = Vec::new();
    for l in manifest {
        let bytes = read(&l.file)?;
        let d = diagnose(&String::from_utf8_lossy(&bytes));
        out.push(Outcome {
            bytes: bytes.len(),
            class_ok: d.class.as_str() == l.failure_class,
            tool_ok: d.tool.as_deref() == Some(l.tool.as_str()),
            culprit_file_ok: d.culprit_file == l.culprit_file,
            culprit_line_ok: d.culprit_line == l.culprit_line,
            got: format!(
                "{} {:?} {:?}:{:?}",
                d.class.as_str(),
                d.tool,
                d.culprit_file,
                d.culprit_line
            ),
            want: format!(
                "{} {:?} {:?}:{:?}",
                l.failure_class,
                Some(&l.tool),
                l.culprit_file,
                l.culprit_line
            ),
            file: l.file,
        });
    }
    Ok(out)
}
