//! The reports `selfheal report` prints, read from the views in the migrations (one query per
//! view, the same figures a team gets by querying the view itself).

use chrono::{DateTime, Utc};

/// The condition every weekly report is read by: its weeks from the one `$1` (`since`) falls in,
/// Monday 00:00 UTC, whatever the session's time zone.
macro_rules! since_week {
    () => {
        "week >= date_trunc('week', $1::timestamptz AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
    };
}
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
            concat!(
                "SELECT repository, week, class, incidents, resolved,
                    mttr_p50_seconds, mttr_p95_seconds, mttr_mean_seconds
             FROM report_mttr_weekly
             WHERE ",
                since_week!(),
                "
               AND ($2::text IS NULL OR repository = $2)
             ORDER BY week DESC, repository, class"
            ),
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

/// One row of `report_fix_rate`: a repository's incidents of one week, and how many selfheal
/// healed (resolved with its pull request merged first).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FixRateWeek {
    pub repository: String,
    pub week: DateTime<Utc>,
    pub incidents: i64,
    pub resolved: i64,
    pub healed: i64,
    pub fix_rate: f64,
}

pub async fn fix_rate(
    client: &impl GenericClient,
    repository: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<FixRateWeek>, tokio_postgres::Error> {
    let rows = client
        .query(
            concat!(
                "SELECT repository, week, incidents, resolved, healed, fix_rate::float8
             FROM report_fix_rate
             WHERE ",
                since_week!(),
                "
               AND ($2::text IS NULL OR repository = $2)
             ORDER BY week DESC, repository"
            ),
            &[&since, &repository],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| FixRateWeek {
            repository: r.get(0),
            week: r.get(1),
            incidents: r.get(2),
            resolved: r.get(3),
            healed: r.get(4),
            fix_rate: r.get(5),
        })
        .collect())
}

/// One row of `report_patch_outcomes`: what one strategy made of one class of failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOutcome {
    pub class: String,
    pub strategy: String,
    pub patches: i64,
    pub validated: i64,
    pub delivered: i64,
    pub merged: i64,
    pub validated_rate: f64,
    /// None while nothing was delivered.
    pub merged_rate: Option<f64>,
    /// Patches the validate stage judged in the sandbox, and those it proved.
    pub proofs: i64,
    pub proved: i64,
    /// None while none was judged.
    pub proved_rate: Option<f64>,
}

/// Every class and strategy, of the runs of one repository or all since `since`.
pub async fn patch_outcomes(
    client: &impl GenericClient,
    repository: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<PatchOutcome>, tokio_postgres::Error> {
    let rows = client
        .query(
            concat!(
                "SELECT class, strategy, sum(patches)::int8, sum(validated)::int8,
                    sum(delivered)::int8, sum(merged)::int8,
                    round(sum(validated) / sum(patches), 4)::float8,
                    round(sum(merged) / nullif(sum(delivered), 0), 4)::float8,
                    sum(proofs)::int8, sum(proved)::int8,
                    round(sum(proved) / nullif(sum(proofs), 0), 4)::float8
             FROM report_patch_outcomes
             WHERE ",
                since_week!(),
                "
               AND ($2::text IS NULL OR repository = $2)
             GROUP BY 1, 2
             ORDER BY 1, 2"
            ),
            &[&since, &repository],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PatchOutcome {
            class: r.get(0),
            strategy: r.get(1),
            patches: r.get(2),
            validated: r.get(3),
            delivered: r.get(4),
            merged: r.get(5),
            validated_rate: r.get(6),
            merged_rate: r.get(7),
            proofs: r.get(8),
            proved: r.get(9),
            proved_rate: r.get(10),
        })
        .collect())
}

/// One row of `report_flaky_tests`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlakyTest {
    pub fingerprint: String,
    pub repository: String,
    pub runs: i64,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// The tests the last flaky run's log named, comma-separated.
    pub failing_tests: String,
}

/// Flaky failures seen since `since`, the most frequent first.
pub async fn flaky_tests(
    client: &impl GenericClient,
    repository: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<FlakyTest>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT fingerprint, repository, runs, first_seen, last_seen, failing_tests
             FROM report_flaky_tests
             WHERE last_seen >= $1 AND ($2::text IS NULL OR repository = $2)
             ORDER BY runs DESC, last_seen DESC, fingerprint",
            &[&since, &repository],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let tests: serde_json::Value = r.get(5);
            FlakyTest {
                fingerprint: r.get(0),
                repository: r.get(1),
                runs: r.get(2),
                first_seen: r.get(3),
                last_seen: r.get(4),
                failing_tests: tests
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default(),
            }
        })
        .collect())
}

/// One row of `report_cost_weekly`: what an installation's runs of one week cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostWeek {
    pub installation_id: i64,
    pub week: DateTime<Utc>,
    pub runs: i64,
    pub ai_tokens: i64,
    /// None where no prices are configured.
    pub ai_cost_usd: Option<f64>,
    pub patch_validate_minutes: f64,
    pub healed: i64,
    /// Tokens and minutes per incident healed; None when none was.
    pub ai_tokens_per_fix: Option<f64>,
    pub minutes_per_fix: Option<f64>,
}

/// The weeks from `since` on, of one installation or all, newest first.
pub async fn cost_weekly(
    client: &impl GenericClient,
    installation: Option<i64>,
    since: DateTime<Utc>,
) -> Result<Vec<CostWeek>, tokio_postgres::Error> {
    let rows = client
        .query(
            concat!(
                "SELECT installation_id, week, runs, ai_tokens, ai_cost_usd::float8,
                    patch_validate_minutes::float8, healed
             FROM report_cost_weekly
             WHERE ",
                since_week!(),
                "
               AND ($2::int8 IS NULL OR installation_id = $2)
             ORDER BY week DESC, installation_id"
            ),
            &[&since, &installation],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let (tokens, minutes, healed): (i64, f64, i64) = (r.get(3), r.get(5), r.get(6));
            let per = |x: f64| (healed > 0).then(|| x / healed as f64);
            CostWeek {
                installation_id: r.get(0),
                week: r.get(1),
                runs: r.get(2),
                ai_tokens: tokens,
                ai_cost_usd: r.get(4),
                patch_validate_minutes: minutes,
                healed,
                ai_tokens_per_fix: per(tokens as f64),
                minutes_per_fix: per(minutes),
            }
        })
        .collect())
}

/// One row of `report_diagnosis_accuracy`: a repository's diagnoses of one class in one week
/// of runs, and how many were later confirmed or overturned (`diagnosis_outcomes`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccuracyWeek {
    pub repository: String,
    pub week: DateTime<Utc>,
    pub class: String,
    pub diagnoses: i64,
    pub confirmed: i64,
    pub overturned: i64,
    /// confirmed / (confirmed + overturned); None while none is settled.
    pub accuracy: Option<f64>,
}

pub async fn diagnosis_accuracy(
    client: &impl GenericClient,
    repository: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<AccuracyWeek>, tokio_postgres::Error> {
    let rows = client
        .query(
            concat!(
                "SELECT repository, week, class, diagnoses, confirmed, overturned, accuracy::float8
             FROM report_diagnosis_accuracy
             WHERE ",
                since_week!(),
                "
               AND ($2::text IS NULL OR repository = $2)
             ORDER BY week DESC, repository, class"
            ),
            &[&since, &repository],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AccuracyWeek {
            repository: r.get(0),
            week: r.get(1),
            class: r.get(2),
            diagnoses: r.get(3),
            confirmed: r.get(4),
            overturned: r.get(5),
            accuracy: r.get(6),
        })
        .collect())
}

/// One row of `report_proofs`: the provers run on one week's validated fixes of one
/// repository (docs/proofs.md). Only passed and failed are attempts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProofsWeek {
    pub repository: String,
    pub week: DateTime<Utc>,
    pub prover: String,
    pub passed: i64,
    pub failed: i64,
    pub unavailable: i64,
    pub already_failing: i64,
    pub not_applicable: i64,
    pub attempted: i64,
    /// passed / attempted; None while nothing was attempted.
    pub success_rate: Option<f64>,
}

pub async fn proofs(
    client: &impl GenericClient,
    repository: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<ProofsWeek>, tokio_postgres::Error> {
    let rows = client
        .query(
            concat!(
                "SELECT repository, week, prover, passed, failed, unavailable, already_failing,
                        not_applicable, attempted, success_rate
             FROM report_proofs
             WHERE ",
                since_week!(),
                "
               AND ($2::text IS NULL OR repository = $2)
             ORDER BY week DESC, repository, prover"
            ),
            &[&since, &repository],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| ProofsWeek {
            repository: r.get(0),
            week: r.get(1),
            prover: r.get(2),
            passed: r.get(3),
            failed: r.get(4),
            unavailable: r.get(5),
            already_failing: r.get(6),
            not_applicable: r.get(7),
            attempted: r.get(8),
            success_rate: r.get(9),
        })
        .collect())
}

/// One row of `report_precision`: selfheal's fixes merged in one week of one repository, and
/// how many of them people reverted within 14 days.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrecisionWeek {
    pub repository: String,
    pub week: DateTime<Utc>,
    pub merged: i64,
    /// 14 days have passed since the merge, or it was reverted before.
    pub settled: i64,
    pub reverted: i64,
    /// Settled and not reverted / settled; None while none is settled.
    pub precision: Option<f64>,
}

pub async fn precision(
    client: &impl GenericClient,
    repository: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<PrecisionWeek>, tokio_postgres::Error> {
    let rows = client
        .query(
            concat!(
                "SELECT repository, week, merged, settled, reverted, precision::float8
             FROM report_precision
             WHERE ",
                since_week!(),
                "
               AND ($2::text IS NULL OR repository = $2)
             ORDER BY week DESC, repository"
            ),
            &[&since, &repository],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| PrecisionWeek {
            repository: r.get(0),
            week: r.get(1),
            merged: r.get(2),
            settled: r.get(3),
            reverted: r.get(4),
            precision: r.get(5),
        })
        .collect())
}

/// One row of `report_time_to_green`: the incidents selfheal healed, first failed in one week,
/// and the medians of where their time went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimeToGreenWeek {
    pub repository: String,
    pub week: DateTime<Utc>,
    pub healed: i64,
    /// First red run to selfheal's first fix pushed.
    pub to_fix_p50_seconds: Option<f64>,
    /// That push to the merge.
    pub to_merge_p50_seconds: Option<f64>,
    /// The merge to the green run.
    pub to_green_p50_seconds: Option<f64>,
}

pub async fn time_to_green(
    client: &impl GenericClient,
    repository: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<TimeToGreenWeek>, tokio_postgres::Error> {
    let rows = client
        .query(
            concat!(
                "SELECT repository, week, healed, to_fix_p50_seconds, to_merge_p50_seconds,
                    to_green_p50_seconds
             FROM report_time_to_green
             WHERE ",
                since_week!(),
                "
               AND ($2::text IS NULL OR repository = $2)
             ORDER BY week DESC, repository"
            ),
            &[&since, &repository],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TimeToGreenWeek {
            repository: r.get(0),
            week: r.get(1),
            healed: r.get(2),
            to_fix_p50_seconds: r.get(3),
            to_merge_p50_seconds: r.get(4),
            to_green_p50_seconds: r.get(5),
        })
        .collect())
}
