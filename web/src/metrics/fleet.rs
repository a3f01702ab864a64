//! The fleet's figures, read from Postgres when Prometheus scrapes web: what every worker did,
//! counted once however many replicas run, and still right after a worker was killed or Redis
//! lost its data (neither holds them).
//!
//! Counters count only rows in states that do not change again (a finished run, a patch past
//! `pending`, a settled model request), so that they never go down; what can still change is a
//! gauge.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use tokio_postgres::types::ToSql;

/// Upper bounds of `selfheal_incident_mttr_seconds`: a minute to a day.
pub const MTTR_BUCKETS: [f64; 9] = [
    60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 43200.0, 86400.0,
];

/// How long one read of the figures may run on Postgres.
const STATEMENT_TIMEOUT: &str = "4s";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Gauge,
    Counter,
}

/// One metric and its samples, each with its label values.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    samples: Vec<(Vec<String>, f64)>,
}

#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket (not cumulative), the last one +Inf (`f64::MAX`).
    buckets: Vec<(f64, u64)>,
    sum: f64,
    count: u64,
}

/// What one read of Postgres gave.
#[derive(Debug, Default)]
pub struct Snapshot {
    families: Vec<Family>,
    mttr: Histogram,
}

/// A label value read from a column selfheal writes from its own enums (class, strategy,
/// verdict, status, stage): anything else becomes `other`, so a row written by hand cannot grow
/// the series without bound.
fn bounded(value: Option<String>) -> String {
    match value {
        Some(v)
            if !v.is_empty()
                && v.len() <= 32
                && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
        {
            v
        }
        Some(_) => "other".to_string(),
        None => "none".to_string(),
    }
}

/// The figures, in one read-only transaction (one consistent view of the fleet) bounded by a
/// statement timeout, so a slow database costs a scrape its fleet figures, not a connection.
pub async fn read(
    client: &mut deadpool_postgres::Client,
) -> Result<Snapshot, crate::error::PgError> {
    let tx = client
        .build_transaction()
        .read_only(true)
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await?;
    tx.batch_execute(&format!(
        "SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'"
    ))
    .await?;
    let mut snapshot = Snapshot::default();
    for query in QUERIES {
        let rows = tx.query(query.sql, &[] as &[&(dyn ToSql + Sync)]).await?;
        let samples = rows
            .iter()
            .map(|row| {
                let labels = (0..query.labels.len())
                    .map(|i| bounded(row.get::<_, Option<String>>(i)))
                    .collect();
                let value: Option<f64> = row.get(query.labels.len());
                (labels, value.unwrap_or(0.0))
            })
            .collect();
        snapshot.families.push(Family {
            name: query.name,
            help: query.help,
            kind: query.kind,
            labels: query.labels,
            samples,
        });
    }
    let totals = tx
        .query_one(
            "SELECT count(*), coalesce(sum(mttr_seconds), 0)::float8
             FROM incident_mttr WHERE mttr_seconds IS NOT NULL",
            &[],
        )
        .await?;
    // Cumulative counts per upper bound (`le`: the bound itself included), as Prometheus
    // reads them; the encoder wants them per bucket.
    let cumulative = tx
        .query(
            "SELECT b.le, count(m.mttr_seconds)
             FROM unnest($1::float8[]) AS b(le)
             LEFT JOIN incident_mttr m ON m.mttr_seconds <= b.le
             GROUP BY b.le ORDER BY b.le",
            &[&MTTR_BUCKETS.to_vec()],
        )
        .await?;
    tx.commit().await?;
    let count: i64 = totals.get(0);
    let mut below = 0u64;
    let mut buckets = Vec::with_capacity(MTTR_BUCKETS.len() + 1);
    for row in &cumulative {
        let upto = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
        buckets.push((row.get::<_, f64>(0), upto.saturating_sub(below)));
        below = upto;
    }
    let count = u64::try_from(count).unwrap_or(0);
    // prometheus-client prints `f64::MAX` as `+Inf` (its own histograms end there).
    buckets.push((f64::MAX, count.saturating_sub(below)));
    snapshot.mttr = Histogram {
        buckets,
        sum: totals.get(1),
        count,
    };
    Ok(snapshot)
}

struct Query {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    /// The label columns in order, then the value.
    sql: &'static str,
}

/// The stage jobs waiting to start: committed to the outbox for a run still in flight, no
/// attempt at their stage yet. Counted and aged by two figures.
macro_rules! waiting_jobs {
    () => {
        "FROM runs r JOIN outbox o ON o.run_id = r.id
         WHERE r.status IN ('queued', 'running')
           AND NOT EXISTS (SELECT 1 FROM stage_attempts a
                           WHERE a.run_id = o.run_id AND a.stage = o.stage)"
    };
}

const QUERIES: &[Query] = &[
    Query {
        name: "runs_in_flight",
        help: "Runs not finished, by status (queued: no stage has started)",
        kind: Kind::Gauge,
        labels: &["status"],
        sql: "SELECT s.status, count(r.id)::float8
              FROM unnest(ARRAY['queued', 'running']) AS s(status)
              LEFT JOIN runs r ON r.status = s.status
              GROUP BY s.status",
    },
    Query {
        name: "incidents_open",
        help: "Incidents whose branch has not gone green yet",
        kind: Kind::Gauge,
        labels: &[],
        sql: "SELECT count(*)::float8 FROM incidents WHERE status = 'open'",
    },
    Query {
        name: "queue_jobs_waiting",
        help: "Stage jobs of unfinished runs committed to the outbox whose stage has not started",
        kind: Kind::Gauge,
        labels: &[],
        sql: concat!("SELECT count(*)::float8 ", waiting_jobs!()),
    },
    Query {
        name: "queue_oldest_job_age_seconds",
        help: "Age of the oldest stage job waiting to start (0 when none waits)",
        kind: Kind::Gauge,
        labels: &[],
        sql: concat!(
            "SELECT coalesce(extract(epoch FROM now() - min(o.created_at)), 0)::float8 ",
            waiting_jobs!()
        ),
    },
    Query {
        name: "deliveries_awaiting_admission",
        help: "Failed runs' deliveries stored and answered that no worker has admitted yet",
        kind: Kind::Gauge,
        labels: &[],
        sql: "SELECT count(*)::float8 FROM webhook_deliveries WHERE outcome = 'accepted'",
    },
    Query {
        name: "admission_oldest_age_seconds",
        help: "Age of the oldest delivery waiting to be admitted (0 when none waits)",
        kind: Kind::Gauge,
        labels: &[],
        sql: "SELECT coalesce(extract(epoch FROM now() - min(received_at)), 0)::float8
              FROM webhook_deliveries WHERE outcome = 'accepted'",
    },
    Query {
        name: "outbox_unpushed",
        help: "Outbox rows (admissions, stage jobs and commands) not pushed to Redis yet",
        kind: Kind::Gauge,
        labels: &[],
        sql: "SELECT count(*)::float8 FROM outbox WHERE enqueued_at IS NULL",
    },
    Query {
        name: "stage_attempts_running",
        help: "Stage attempts running now, by stage",
        kind: Kind::Gauge,
        labels: &["stage"],
        sql: "SELECT s.stage, count(a.id)::float8
              FROM unnest(ARRAY['triage', 'diagnose', 'patch', 'validate', 'verify', 'deliver'])
                   AS s(stage)
              LEFT JOIN stage_attempts a ON a.stage = s.stage AND a.outcome = 'running'
              GROUP BY s.stage",
    },
    Query {
        name: "stage_oldest_attempt_seconds",
        help: "How long the oldest running stage attempt has run (0 when none runs)",
        kind: Kind::Gauge,
        labels: &[],
        sql: "SELECT coalesce(extract(epoch FROM now() - min(started_at)), 0)::float8
              FROM stage_attempts WHERE outcome = 'running'",
    },
    Query {
        name: "runs_finished",
        help: "Runs finished, by status",
        kind: Kind::Counter,
        labels: &["status"],
        sql: "SELECT s.status, count(r.id)::float8
              FROM unnest(ARRAY['succeeded', 'incomplete', 'failed']) AS s(status)
              LEFT JOIN runs r ON r.status = s.status
              GROUP BY s.status",
    },
    Query {
        name: "diagnoses_settled",
        help: "Diagnoses later confirmed (their fix merged and the branch went green) or overturned (not reproduced, or another class)",
        kind: Kind::Counter,
        labels: &["class", "outcome"],
        sql: "SELECT class, outcome, count(*)::float8 FROM diagnosis_outcomes
              WHERE outcome IS NOT NULL GROUP BY 1, 2",
    },
    Query {
        name: "diagnoses_unsettled",
        help: "Diagnoses neither confirmed nor overturned yet",
        kind: Kind::Gauge,
        labels: &[],
        sql: "SELECT count(*)::float8 FROM diagnosis_outcomes WHERE outcome IS NULL",
    },
    Query {
        name: "patches",
        help: "Patches past pending, by failure class, strategy and verdict",
        kind: Kind::Counter,
        labels: &["class", "strategy", "verdict"],
        sql: "SELECT class, strategy, verdict, count(*)::float8 FROM patches
              WHERE verdict <> 'pending' GROUP BY 1, 2, 3",
    },
    Query {
        name: "validations",
        help: "Sandbox proofs of patches, by verdict (fixed: the failing step passed every run)",
        kind: Kind::Counter,
        labels: &["verdict"],
        sql: "SELECT verdict, count(*)::float8 FROM validations GROUP BY 1",
    },
    Query {
        name: "verifications",
        help: "The verify stage's decisions on the runs that reached it, by verdict",
        kind: Kind::Gauge,
        labels: &["verdict"],
        sql: "SELECT verdict, count(*)::float8 FROM verifications GROUP BY 1",
    },
    Query {
        name: "proofs",
        help: "Provers run on validated fixes, by prover and outcome (unavailable and not_applicable are never successes)",
        kind: Kind::Counter,
        labels: &["prover", "outcome"],
        sql: "SELECT prover, outcome, count(*)::float8 FROM proofs GROUP BY 1, 2",
    },
    Query {
        name: "invariant_denials",
        help: "Validated fixes' denials by the invariants (policies/invariants.rego), by invariant; a repository's own policies count as `repository`",
        kind: Kind::Counter,
        labels: &["policy", "invariant"],
        sql: "SELECT CASE WHEN policy = 'selfheal' THEN 'selfheal' ELSE 'repository' END,
                     CASE WHEN policy = 'selfheal' THEN replace(invariant, '-', '_') ELSE 'repository' END,
                     count(*)::float8
              FROM invariant_denials GROUP BY 1, 2",
    },
    Query {
        name: "commands",
        help: "People's commands carried out or not (`/selfheal` comments and the dashboard's retry, stop, approve), by source, command and final status; refused: the person may not, or selfheal would not",
        kind: Kind::Counter,
        labels: &["source", "command", "status"],
        sql: "SELECT source, command, status, count(*)::float8 FROM commands WHERE status <> 'queued' GROUP BY 1, 2, 3",
    },
    Query {
        name: "pull_requests",
        help: "selfheal's pull requests opened (GitHub numbered them) and merged",
        kind: Kind::Counter,
        labels: &["state"],
        sql: "SELECT 'opened', count(*)::float8 FROM deliveries
              WHERE kind = 'pull_request' AND pr_number IS NOT NULL
              UNION ALL
              SELECT 'merged', count(*)::float8 FROM deliveries
              WHERE kind = 'pull_request' AND merged_at IS NOT NULL",
    },
    Query {
        name: "ai_tokens",
        help: "Tokens model services processed, settled requests, by provider and kind",
        kind: Kind::Counter,
        labels: &["provider", "kind"],
        sql: "SELECT s.provider, k.kind, sum(k.n)::float8
              FROM ai_spend s
              CROSS JOIN LATERAL (VALUES ('input', s.input_tokens), ('output', s.output_tokens),
                                         ('cache_read', s.cache_read_tokens),
                                         ('cache_write', s.cache_write_tokens)) AS k(kind, n)
              WHERE s.settled_at IS NOT NULL AND s.input_tokens IS NOT NULL
              GROUP BY 1, 2",
    },
    Query {
        name: "ai_tokens_reserved",
        help: "Tokens reserved by model requests not settled yet, by provider",
        kind: Kind::Gauge,
        labels: &["provider"],
        sql: "SELECT provider, sum(reserved_tokens)::float8 FROM ai_spend
              WHERE settled_at IS NULL GROUP BY 1",
    },
    Query {
        name: "ai_cost_usd",
        help: "What settled model requests cost in US dollars at the configured prices",
        kind: Kind::Counter,
        labels: &["provider"],
        sql: "SELECT provider, sum(cost_usd)::float8 FROM ai_spend
              WHERE settled_at IS NOT NULL AND cost_usd IS NOT NULL GROUP BY 1",
    },
    Query {
        name: "events_pending",
        help: "Lifecycle events not delivered yet, per registered sink",
        kind: Kind::Gauge,
        labels: &["sink"],
        sql: "SELECT s.name, count(d.event_id)::float8
              FROM event_sinks s
              LEFT JOIN event_deliveries d ON d.sink = s.name AND d.delivered_at IS NULL
              GROUP BY s.name",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stages_counted_are_the_pipelines() {
        let sql = QUERIES
            .iter()
            .find(|q| q.name == "stage_attempts_running")
            .unwrap()
            .sql;
        for stage in selfheal_shared::stage::Stage::ALL {
            assert!(sql.contains(&format!("'{}'", stage.as_str())), "{stage}");
        }
        assert_eq!(sql.matches("', '").count() + 1, 6);
    }

    #[test]
    fn label_values_stay_bounded() {
        assert_eq!(bounded(Some("lint_autofix".into())), "lint_autofix");
        assert_eq!(bounded(Some("Evil Value{}".into())), "other");
        assert_eq!(bounded(Some("a".repeat(33))), "other");
        assert_eq!(bounded(None), "none");
    }
}

fn sample(encoder: &mut MetricEncoder, kind: Kind, value: f64) -> Result<(), std::fmt::Error> {
    match kind {
        Kind::Gauge => encoder.encode_gauge(&value),
        Kind::Counter => encoder.encode_counter::<NoLabelSet, _, f64>(&value, None),
    }
}

/// Serves the last snapshot at every scrape; `None` (no read yet, or the last one failed)
/// serves none of the fleet's figures rather than stale or zero ones.
#[derive(Debug, Clone, Default)]
pub struct FleetCollector(pub Arc<Mutex<Option<Arc<Snapshot>>>>);

impl Collector for FleetCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(snapshot) = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return Ok(());
        };
        for family in &snapshot.families {
            let kind = match family.kind {
                Kind::Gauge => MetricType::Gauge,
                Kind::Counter => MetricType::Counter,
            };
            let mut metric = encoder.encode_descriptor(family.name, family.help, None, kind)?;
            for (values, value) in &family.samples {
                if family.labels.is_empty() {
                    sample(&mut metric, family.kind, *value)?;
                    continue;
                }
                let labels: Vec<(&str, &str)> = family
                    .labels
                    .iter()
                    .copied()
                    .zip(values.iter().map(String::as_str))
                    .collect();
                sample(&mut metric.encode_family(&labels)?, family.kind, *value)?;
            }
        }
        let mttr = &snapshot.mttr;
        let mut metric = encoder.encode_descriptor(
            "incident_mttr_seconds",
            "Time from an incident's first failure to the run that went green, resolved incidents",
            None,
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<NoLabelSet>(mttr.sum, mttr.count, &mttr.buckets, None)?;
        Ok(())
    }
}
