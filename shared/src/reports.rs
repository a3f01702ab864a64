//! The reports `selfheal report` prints, read from the views in the migrations (one query per
//! view, the same figures a team gets by querying the view itself).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

/// One row of `report_mttr_weekly`: a repository's incidents that first failed in one week,
/// of one failure class, and how long the resolved ones took to go green.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MttrWeek {
    pub repository: String,
    /// Monday 00:00 UTC of the week.
    pub week: DateTime<Utc>,
    pub class: String,
    pub incidents: i64,
    pub resolved: i64,
    /// None while none of them is resolved.
    pub mttr_p50_seconds: Option<f64>,
    pub mttr_p95_seconds: Option<f64>,
    pub mttr_mean_seconds: Option<f64>,
}

/// The weeks from `since` on, of one repository or all, newest week first.
pub async fn mttr_weekly(
    client: &impl GenericClient,
    repository: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<MttrWeek>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT repository, week, class, incidents, resolved,
                    mttr_p50_seconds, mttr_p95_seconds, mttr_mean_seconds
             FROM report_mttr_weekly
             WHERE week >= date_trunc('week', $1::timestamptz AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
               AND ($2::text IS NULL OR repository = $2)
             ORDER BY week DESC, repository, class",
            &[&since, &repository],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| MttrWeek {
            repository: r.get(0),
            week: r.get(1),
            class: r.get(2),
            incidents: r.get(3),
            resolved: r.get(4),
            mttr_p50_seconds: r.get(5),
            mttr_p95_seconds: r.get(6),
            mttr_mean_seconds: r.get(7),
        })
        .collect())
}
