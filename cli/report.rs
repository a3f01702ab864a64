//! `selfheal report`: the MTTR view as a table for people, or CSV and JSON for tools (raw
//! seconds there; minutes and hours in the table).

use selfheal_shared::reports::MttrWeek;

/// `rows` in `format` (`table`, `csv` or `json`).
pub fn render(rows: &[MttrWeek], format: &str) -> anyhow::Result<String> {
    match format {
        "json" => Ok(serde_json::to_string_pretty(rows)? + "\n"),
        "csv" => {
            let mut out = csv::Writer::from_writer(Vec::new());
            for row in rows {
                out.serialize(row)?;
            }
            Ok(String::from_utf8(out.into_inner()?)?)
        }
        _ => Ok(table(rows)),
    }
}

fn table(rows: &[MttrWeek]) -> String {
    if rows.is_empty() {
        return "no incidents in that time\n".into();
    }
    let head = [
        "week",
        "repository",
        "class",
        "incidents",
        "resolved",
        "MTTR p50",
        "p95",
        "mean",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
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
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([head[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cols: Vec<&str>| {
        let mut s = cols
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut out = line(head.to_vec());
    for c in &cells {
        out.push_str(&line(c.iter().map(String::as_str).collect()));
    }
    out
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
