//! `selfheal report`: a report's rows as a table for people, or CSV and JSON for tools (raw
//! seconds there; minutes and hours in the MTTR table).

use selfheal_shared::reports::MttrWeek;
use serde::Serialize;

/// `rows` in `format` (`table`, `csv` or `json`); the table has the CSV's columns, aligned.
pub fn render<T: Serialize>(rows: &[T], format: &str) -> anyhow::Result<String> {
    match format {
        "json" => Ok(serde_json::to_string_pretty(rows)? + "\n"),
        "csv" => csv_of(rows),
        _ if rows.is_empty() => Ok("nothing in that time\n".into()),
        _ => {
            let text = csv_of(rows)?;
            let mut records = csv::Reader::from_reader(text.as_bytes());
            let head: Vec<String> = records.headers()?.iter().map(str::to_string).collect();
            let mut cells = Vec::new();
            for record in records.records() {
                cells.push(record?.iter().map(str::to_string).collect::<Vec<_>>());
            }
            Ok(aligned(&head, &cells))
        }
    }
}

/// The MTTR report: durations read as people say them in the table.
pub fn render_mttr(rows: &[MttrWeek], format: &str) -> anyhow::Result<String> {
    match format {
        "table" => Ok(table(rows)),
        _ => render(rows, format),
    }
}

fn csv_of<T: Serialize>(rows: &[T]) -> anyhow::Result<String> {
    let mut out = csv::Writer::from_writer(Vec::new());
    for row in rows {
        out.serialize(row)?;
    }
    Ok(String::from_utf8(out.into_inner()?)?)
}

/// Columns padded to their widest cell, two spaces apart.
fn aligned(head: &[String], cells: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            cells
                .iter()
                .filter_map(|c| c.get(i))
                .map(|c| c.chars().count())
                .chain([head[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cols: &[String]| {
        let s = cols
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        format!("{}\n", s.trim_end())
    };
    let mut out = line(head);
    for c in cells {
        out.push_str(&line(c));
    }
    out
}

fn table(rows: &[MttrWeek]) -> String {
    if rows.is_empty() {
        return "no incidents in that time\n".into();
    }
    let head: Vec<String> = [
        "week",
        "repository",
        "class",
        "incidents",
        "resolved",
        "MTTR p50",
        "p95",
        "mean",
    ]
    .map(str::to_string)
    .to_vec();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.week.format("%Y-%m-%d").to_string(),
                r.repository.clone(),
                r.class.clone(),
                r.incidents.to_string(),
                r.resolved.to_string(),
                duration(r.mttr_p50_seconds),
                duration(r.mttr_p95_seconds),
                duration(r.mttr_mean_seconds),
            ]
        })
        .collect();
    aligned(&head, &cells)
}

/// `42s`, `12m 05s`, `3h 04m`, `2d 03h`; `-` when there is none.
fn duration(seconds: Option<f64>) -> String {
    let Some(s) = seconds else {
        return "-".into();
    };
    let s = s.round() as i64;
    match s {
        ..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::duration;

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(None), "-");
        assert_eq!(duration(Some(42.4)), "42s");
        assert_eq!(duration(Some(725.0)), "12m 05s");
        assert_eq!(duration(Some(11_040.0)), "3h 04m");
        assert_eq!(duration(Some(183_600.0)), "2d 03h");
    }
}
