//! The observability kit in deploy/observability: Prometheus's own checks of the rules and the
//! config, the alerts' unit tests, and that every metric a rule or dashboard names is one a
//! real web and worker export, every recording rule a dashboard reads is defined, every alert
//! has its runbook section and every SQL panel runs on selfheal's schema.

use crate::reporting::seeded;
use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

fn kit() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/observability")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(kit())
        .output()
        .expect("promtool, from Debian's prometheus package (scripts/services.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn prometheus_accepts_the_rules_and_the_config_and_the_alerts_pass_their_unit_tests() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["check", "config", "prometheus.yml"]);
    let tested = promtool(&["test", "rules", "alerts.test.yml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert is tested both ways: a case where it fires and one where it stays quiet.
    let tests: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(kit().join("alerts.test.yml")).unwrap())
            .unwrap();
    let mut cases: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for test in tests["tests"].as_array().unwrap() {
        for case in test["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_string();
            let fires = case["exp_alerts"]
                .as_array()
                .is_some_and(|alerts| !alerts.is_empty());
            let counts = cases.entry(name).or_default();
            if fires {
                counts.0 += 1;
            } else {
                counts.1 += 1;
            }
        }
    }
    for alert in rules().alerts {
        let (fires, quiet) = cases.get(&alert.name).copied().unwrap_or_default();
        assert!(
            fires > 0 && quiet > 0,
            "{}: {fires} case(s) where it fires, {quiet} where it stays quiet",
            alert.name
        );
    }
}

struct Alert {
    name: String,
    expr: String,
    runbook: String,
}

struct Rules {
    records: BTreeSet<String>,
    /// Every expression, recording rules' and alerts'.
    exprs: Vec<String>,
    alerts: Vec<Alert>,
}

fn rules() -> Rules {
    let text = std::fs::read_to_string(kit().join("alerts.yml")).unwrap();
    let doc: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut rules = Rules {
        records: BTreeSet::new(),
        exprs: Vec::new(),
        alerts: Vec::new(),
    };
    for group in doc["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let expr = rule["expr"].as_str().unwrap().to_string();
            rules.exprs.push(expr.clone());
            if let Some(record) = rule["record"].as_str() {
                rules.records.insert(record.to_string());
            }
            if let Some(name) = rule["alert"].as_str() {
                rules.alerts.push(Alert {
                    name: name.to_string(),
                    expr,
                    runbook: rule["annotations"]["runbook_url"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                });
            }
        }
    }
    rules
}

/// The dashboards' queries: (dashboard, Prometheus expressions, SQL).
fn dashboards() -> Vec<(String, Vec<String>, Vec<String>)> {
    let dir = kit().join("grafana/dashboards");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let (mut exprs, mut sql) = (Vec::new(), Vec::new());
        for panel in doc["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(e) = target["expr"].as_str() {
                    exprs.push(e.to_string());
                }
                if let Some(q) = target["rawSql"].as_str() {
                    sql.push(q.to_string());
                }
            }
        }
        out.push((doc["title"].as_str().unwrap().to_string(), exprs, sql));
    }
    out.sort();
    assert_eq!(out.len(), 3, "Operational, Security and Quality");
    out
}

/// The names in `expr` that start with `prefix` (then lower-case letters, digits, `_` and,
/// for recording rules, `:`).
fn names(expr: &str, prefix: &str, colons: bool) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().last();
        let tail = &rest[at..];
        let len = tail
            .char_indices()
            .find(|(_, c)| {
                !(c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || *c == '_'
                    || (colons && *c == ':'))
            })
            .map_or(tail.len(), |(i, _)| i);
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            found.insert(tail[..len].to_string());
        }
        rest = &tail[len.max(1)..];
    }
    found
}

/// The metric families a `/metrics` page declares (its `# TYPE` lines), each with the sample
/// names it can carry.
fn exported(page: &str, into: &mut BTreeMap<String, Vec<String>>) {
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        let samples = match kind {
            "counter" => vec![format!("{name}_total")],
            "histogram" => ["bucket", "sum", "count"]
                .iter()
                .map(|s| format!("{name}_{s}"))
                .collect(),
            _ => vec![name.to_string()],
        };
        into.insert(name.to_string(), samples);
    }
}

async fn page(url: &str, wait: Duration) -> String {
    let started = Instant::now();
    loop {
        match reqwest::get(url).await {
            Ok(r) if r.status().is_success() => return r.text().await.unwrap(),
            _ if started.elapsed() < wait => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn every_metric_the_rules_and_dashboards_name_is_one_selfheal_exports() {
    let mut env = TestEnv::new().await;
    let worker_url = env.worker_metrics();
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    let mut families = BTreeMap::new();
    let web = page(&format!("{}/metrics", app.url), Duration::from_secs(5)).await;
    assert_eq!(sample_value(&web, "selfheal_fleet_metrics_up"), Some(1.0));
    exported(&web, &mut families);
    exported(
        &page(&worker_url, Duration::from_secs(30)).await,
        &mut families,
    );
    let mut known: BTreeSet<String> = families.values().flatten().cloned().collect();
    known.insert("up".into());

    let rules = rules();
    let mut named = BTreeSet::new();
    for expr in &rules.exprs {
        named.extend(names(expr, "selfheal_", false));
    }
    named.insert("up".into());
    for (title, exprs, _) in dashboards() {
        for expr in exprs {
            let metrics = names(&expr, "selfheal_", false);
            assert!(
                !metrics.is_empty() || expr.contains("selfheal:"),
                "{title}: {expr}"
            );
            named.extend(metrics);
            for record in names(&expr, "selfheal:", true) {
                assert!(
                    rules.records.contains(&record),
                    "{title} reads {record}, which alerts.yml does not record"
                );
            }
        }
    }
    let unknown: Vec<_> = named.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "named but not exported: {unknown:?}\nexported: {known:?}"
    );
    // And the other way: every family selfheal exports is on a dashboard or in a rule, but
    // for the few left to ad-hoc queries.
    let unused: Vec<&String> = families
        .iter()
        .filter(|(_, samples)| !samples.iter().any(|s| named.contains(s)))
        .map(|(family, _)| family)
        .collect();
    let left_out = [
        "selfheal_enqueue_deferred",
        "selfheal_diagnoses_unsettled",
        "selfheal_verifications",
        "selfheal_ai_tokens_reserved",
    ];
    assert!(
        unused.iter().all(|f| left_out.contains(&f.as_str())),
        "exported but on no dashboard and in no rule: {unused:?}"
    );
}

#[test]
fn every_alert_has_its_runbook_section() {
    let runbooks = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/runbooks");
    let text = std::fs::read_to_string(runbooks.join("alerts.md")).unwrap();
    // GitHub's anchors: the heading in lower case.
    let anchors: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    for alert in rules().alerts {
        assert_eq!(
            alert.runbook,
            format!("docs/runbooks/alerts.md#{}", alert.name.to_lowercase()),
            "{}",
            alert.name
        );
        assert!(
            anchors.contains(&alert.name.to_lowercase()),
            "no section for {} ({})",
            alert.name,
            alert.expr
        );
    }
    // Links between the runbooks resolve.
    for entry in std::fs::read_dir(&runbooks).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for link in text.split("](").skip(1) {
            let target = link.split(')').next().unwrap();
            let file = target.split('#').next().unwrap();
            if file.is_empty() || file.starts_with("http") {
                continue;
            }
            assert!(
                Path::new(&runbooks).join(file).exists(),
                "{}: {target}",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn every_sql_panel_runs_on_the_report_views() {
    let env = seeded().await;
    let db = env.db().await;
    let mut ran = 0;
    for (title, _, queries) in dashboards() {
        for sql in queries {
            db.query(sql.as_str(), &[])
                .await
                .unwrap_or_else(|e| panic!("{title}: {sql}: {e}"));
            ran += 1;
        }
    }
    assert!(ran >= 6, "{ran}");
}

#[test]
fn the_composed_prometheus_scrapes_where_compose_serves_the_metrics() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let compose: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(root.join("compose.yaml")).unwrap())
            .unwrap();
    let port_of = |service: &str| -> String {
        let bind = compose["services"][service]["environment"]["SELFHEAL_METRICS_BIND"]
            .as_str()
            .unwrap_or_else(|| panic!("{service} serves its metrics apart"));
        bind.rsplit_once(':').unwrap().1.to_string()
    };
    let prometheus: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(kit().join("prometheus.yml")).unwrap())
            .unwrap();
    let jobs = prometheus["scrape_configs"].as_array().unwrap();
    let job = |name: &str| jobs.iter().find(|j| j["job_name"] == name).unwrap();
    assert_eq!(
        job("selfheal-web")["static_configs"][0]["targets"][0],
        format!("web:{}", port_of("web")).as_str()
    );
    let workers = &job("selfheal-worker")["dns_sd_configs"][0];
    assert_eq!(workers["names"][0], "worker");
    assert_eq!(
        workers["port"].as_u64().map(|p| p.to_string()),
        Some(port_of("worker"))
    );
    // The metrics port is not the one compose publishes.
    let published = serde_json::to_string(&compose["services"]["web"]["ports"]).unwrap();
    assert!(!published.contains(&port_of("web")), "{published}");
}
