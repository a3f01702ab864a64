//! The dashboard's pages, rendered on the server (maud escapes every value it is given, so a
//! log excerpt, a diff or a branch name is text, never markup). No script anywhere.

use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use selfheal_shared::config::AccessRole;

use super::queries::{IncidentRow, Quality, RunPage, RunRow};
use crate::access::session_store::OpenSession;

/// Where GitHub links may point: the configured GitHub's web host only, so a URL stored from a
/// hostile payload is shown as text, never followed.
pub struct Links<'a> {
    pub github: &'a str,
}

impl Links<'_> {
    fn trusted<'u>(&self, url: &'u str) -> Option<&'u str> {
        let rest = url.strip_prefix(self.github)?;
        rest.starts_with('/').then_some(url)
    }

    fn run(&self, repository: &str, github_run_id: i64) -> String {
        format!("{}/{repository}/actions/runs/{github_run_id}", self.github)
    }

    fn commit(&self, repository: &str, sha: &str) -> String {
        format!("{}/{repository}/commit/{sha}", self.github)
    }
}

pub(super) fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · selfheal" }
                link rel="stylesheet" href="/dashboard/style.css";
            }
            body {
                header {
                    nav {
                        strong { "selfheal" }
                        a href="/dashboard" { "Runs" }
                        a href="/dashboard/incidents" { "Incidents" }
                        a href="/dashboard/quality" { "Quality" }
                        form method="post" action="/dashboard/logout" class="logout" {
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The sign-in page: the provider's button, the token's form, or both; `error` says why the
/// last try failed.
pub fn login(error: Option<&str>, token: bool, oidc: bool) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Sign in · selfheal" }
                link rel="stylesheet" href="/dashboard/style.css";
            }
            body {
                main class="login" {
                    h1 { "selfheal" }
                    @if let Some(error) = error {
                        p class="error" role="alert" { (error) }
                    }
                    @if oidc {
                        p { a class="button" href="/dashboard/oidc/login" { "Sign in with your organisation" } }
                    }
                    @if token {
                        form method="post" action="/dashboard/login" {
                            label for="token" { "Operator token" }
                            input id="token" name="token" type="password" autocomplete="current-password" required;
                            button type="submit" { "Sign in" }
                        }
                    }
                }
            }
        }
    }
}

/// After a sign-in: on to the dashboard by a new navigation from this page, so that the
/// SameSite=Strict session cookie goes with it.
pub fn signed_in(name: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="0;url=/dashboard";
                title { "Signed in · selfheal" }
                link rel="stylesheet" href="/dashboard/style.css";
            }
            body {
                main class="login" {
                    p { "Signed in as " (name) ". " a href="/dashboard" { "Continue to the dashboard" } }
                }
            }
        }
    }
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// `42s`, `12m 05s`, `3h 04m`, `2d 03h`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.round() as i64;
    match s {
        ..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn pull_request(links: &Links, number: Option<i32>, url: Option<&str>, merged: bool) -> Markup {
    html! {
        @if let Some(n) = number {
            @match url.and_then(|u| links.trusted(u)) {
                Some(url) => a href=(url) { "#" (n) },
                None => span title=(url.unwrap_or_default()) { "#" (n) },
            }
            @if merged { " " span class="badge merged" { "merged" } }
        }
    }
}

pub fn runs(
    links: &Links,
    rows: &[RunRow],
    status: Option<&str>,
    repository: Option<&str>,
) -> Markup {
    let statuses = ["queued", "running", "succeeded", "incomplete", "failed"];
    layout(
        "Runs",
        html! {
            form method="get" action="/dashboard" class="filters" {
                label { "Status "
                    select name="status" {
                        option value="" { "any" }
                        @for s in statuses {
                            option value=(s) selected[status == Some(s)] { (s) }
                        }
                    }
                }
                label { "Repository "
                    input name="repo" value=(repository.unwrap_or_default()) placeholder="owner/name";
                }
                button type="submit" { "Filter" }
            }
            @if rows.is_empty() {
                p { "No runs." }
            } @else {
                table {
                    thead { tr {
                        th { "Started" } th { "Repository" } th { "Branch" } th { "Status" }
                        th { "Stage" } th { "Class" } th { "Strategy" } th { "Verdict" } th { "Pull request" }
                    } }
                    tbody {
                        @for r in rows {
                            tr {
                                td { a href={ "/dashboard/runs/" (r.id) } { (when(r.created_at)) } }
                                td { (r.repository) }
                                td { (r.branch) }
                                td { span class={ "badge " (r.status) } { (r.status) } }
                                td { (r.stage.as_deref().unwrap_or("-")) }
                                td { (r.class.as_deref().unwrap_or("-")) }
                                td { (r.strategy.as_deref().unwrap_or("-")) }
                                td { (r.verdict.as_deref().unwrap_or("-")) }
                                td { (pull_request(links, r.pr_number, r.pr_url.as_deref(), r.merged)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub fn run(links: &Links, page: &RunPage, role: AccessRole) -> Markup {
    let r = &page.run;
    layout(
        &format!("Run {}", r.id),
        html! {
            dl class="facts" {
                dt { "Repository" } dd { (r.repository) " · " (r.branch) }
                dt { "Status" } dd { span class={ "badge " (r.status) } { (r.status) }
                    @if let Some(reason) = &page.failure_reason { " " (reason) } }
                dt { "Started" } dd { (when(r.created_at)) }
                @if let Some(done) = r.finished_at {
                    dt { "Finished" } dd { (when(done)) " (" (duration((done - r.created_at).num_milliseconds() as f64 / 1000.0)) ")" }
                }
                dt { "GitHub" } dd {
                    a href=(links.run(&r.repository, page.github_run_id)) { "failed run " (page.github_run_id) }
                    " · "
                    a href=(links.commit(&r.repository, &page.head_sha)) { "commit " (page.head_sha.get(..12).unwrap_or(&page.head_sha)) }
                }
                dt { "Incident" } dd { code { (page.incident) } }
                dt { "Pull request" } dd { (pull_request(links, r.pr_number, r.pr_url.as_deref(), r.merged)) @if r.pr_number.is_none() { "-" } }
                @if let Some(fix) = &page.fix_head {
                    dt { "Fix commit" } dd { a href=(links.commit(&r.repository, fix)) { code { (fix) } } }
                }
            }
            @if role >= AccessRole::Operator {
                // A worker carries each out as it does `/selfheal` comments, with the same checks.
                div class="actions" {
                    @for (action, label) in [("retry", "Retry"), ("stop", "Stop")] {
                        form method="post" action={ "/dashboard/runs/" (r.id) "/" (action) } {
                            button type="submit" { (label) }
                        }
                    }
                    // The approval names the commit shown above: the worker merges that one or
                    // nothing, so a later push is never merged on this click.
                    @if let Some(fix) = &page.fix_head {
                        form method="post" action={ "/dashboard/runs/" (r.id) "/approve" } {
                            input type="hidden" name="head" value=(fix);
                            button type="submit" { "Approve " (fix.get(..12).unwrap_or(fix)) " and merge" }
                        }
                    }
                }
            }
            h2 { "Timeline" }
            ol class="timeline" {
                @for a in &page.attempts {
                    li class={ "stage " (a.outcome) } {
                        strong { (a.stage) } " attempt " (a.attempt) " "
                        span class={ "badge " (a.outcome) } { (a.outcome) }
                        " " span class="muted" { (when(a.started_at)) " · "
                            (a.seconds.map(duration).unwrap_or_else(|| "running".into())) " · " (a.worker) }
                        @if let Some(detail) = &a.detail { div { (detail) } }
                        @if let Some(error) = &a.error { div class="error" { (error) } }
                    }
                }
            }
            @if let Some(d) = &page.diagnosis {
                h2 { "Diagnosis" }
                dl class="facts" {
                    dt { "Class" } dd { (d.class) @if let Some(tool) = &d.tool { " (" (tool) ")" } }
                    @if let Some(c) = &d.culprit { dt { "Culprit" } dd { code { (c) } } }
                    @if let Some(c) = &d.command { dt { "Command" } dd { code { (c) } } }
                }
                pre class="excerpt" { (d.excerpt) }
            }
            @if let Some(p) = &page.patch {
                h2 { "Patch" }
                dl class="facts" {
                    dt { "Strategy" } dd { (p.strategy) " for " (p.class) }
                    dt { "Verdict" } dd { span class={ "badge " (p.verdict) } { (p.verdict) }
                        @if let Some(reason) = &p.reason { " " (reason) } }
                }
                @if let Some(diff) = &p.diff { pre class="diff" { (diff) } }
            }
            @if let Some(v) = &page.proof {
                h2 { "Proof in the sandbox" }
                p { span class={ "badge " (v.verdict) } { (v.verdict) } " "
                    "passed " (v.passed) " of " (v.runs) " runs (" (v.failed) " failed) in " (duration(v.seconds))
                    @if let Some(reason) = &v.reason { ": " (reason) } }
            }
            @if let Some(d) = &page.decision {
                h2 { "Verify" }
                p { span class={ "badge " (d.verdict) } { (d.verdict) } " " (d.reason) }
            }
        },
    )
}

pub fn incidents(rows: &[IncidentRow]) -> Markup {
    layout(
        "Incidents",
        html! {
            @if rows.is_empty() {
                p { "No incidents." }
            } @else {
                table {
                    thead { tr {
                        th { "First failed" } th { "Repository" } th { "Branch" } th { "Workflow" }
                        th { "Failed runs" } th { "Status" } th { "MTTR" } th { "Healed by selfheal" }
                    } }
                    tbody {
                        @for i in rows {
                            tr {
                                td { (when(i.first_failed_at)) }
                                td { (i.repository) }
                                td { (i.branch) }
                                td { (i.workflow.as_deref().unwrap_or("-")) }
                                td { (i.failed_runs) }
                                td { span class={ "badge " (i.status) } { (i.status) } }
                                td { (i.mttr_seconds.map(duration).unwrap_or_else(|| "-".into())) }
                                td { @if i.healed { "yes" } @else { "no" } }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn percent(part: i64, whole: i64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * part as f64 / whole as f64)
    }
}

/// MTTR p50 and p95 per week as two polylines, in seconds on a linear scale.
fn mttr_chart(q: &Quality) -> Markup {
    let points: Vec<(usize, f64, f64)> = q
        .weeks
        .iter()
        .enumerate()
        .filter_map(|(i, w)| Some((i, w.p50?, w.p95?)))
        .collect();
    if points.is_empty() {
        return html! { p { "No incident resolved in the last twelve weeks." } };
    }
    let (width, height, pad) = (640.0, 220.0, 40.0);
    let top = points.iter().map(|p| p.2).fold(1.0, f64::max);
    let n = q.weeks.len().max(2) - 1;
    let x = |i: usize| pad + (width - 2.0 * pad) * i as f64 / n as f64;
    let y = |v: f64| height - pad - (height - 2.0 * pad) * v / top;
    let line = |pick: fn(&(usize, f64, f64)) -> f64| {
        points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.0), y(pick(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg class="chart" viewBox={ "0 0 " (width) " " (height) } role="img" aria-label="MTTR p50 and p95 per week" {
            line x1=(pad) y1=(height - pad) x2=(width - pad) y2=(height - pad) class="axis" {}
            line x1=(pad) y1=(pad) x2=(pad) y2=(height - pad) class="axis" {}
            text x="4" y=(pad) { (duration(top)) }
            text x="4" y=(height - pad) { "0" }
            polyline points=(line(|p| p.2)) class="p95" {}
            polyline points=(line(|p| p.1)) class="p50" {}
            @for (i, w) in q.weeks.iter().enumerate() {
                text x=(x(i)) y=(height - 12.0) text-anchor="middle" { (w.week.format("%m-%d")) }
            }
        }
        p class="legend" { span class="p50" { "p50" } " " span class="p95" { "p95" } }
    }
}

pub fn quality(q: &Quality) -> Markup {
    layout(
        "Quality",
        html! {
            p { "The last twelve weeks, from the report views (docs/reporting.md)." }
            h2 { "Fix rate" }
            p { (q.healed) " of " (q.incidents) " incidents healed by selfheal (" (percent(q.healed, q.incidents)) ")" }
            h2 { "MTTR per week" }
            (mttr_chart(q))
            table {
                thead { tr { th { "Week" } th { "Resolved" } th { "p50" } th { "p95" } } }
                tbody {
                    @for w in &q.weeks {
                        tr {
                            td { (w.week.format("%Y-%m-%d")) }
                            td { (w.resolved) }
                            td { (w.p50.map(duration).unwrap_or_else(|| "-".into())) }
                            td { (w.p95.map(duration).unwrap_or_else(|| "-".into())) }
                        }
                    }
                }
            }
            h2 { "Success by class and strategy" }
            table {
                thead { tr { th { "Class" } th { "Strategy" } th { "Patches" } th { "Proved" } th { "Delivered" } th { "Merged" } } }
                tbody {
                    @for r in &q.rates {
                        tr {
                            td { (r.class) } td { (r.strategy) } td { (r.patches) }
                            td { (r.validated) " (" (percent(r.validated, r.patches)) ")" }
                            td { (r.delivered) }
                            td { (r.merged) " (" (percent(r.merged, r.delivered)) ")" }
                        }
                    }
                }
            }
            h2 { "Diagnosis accuracy" }
            table {
                thead { tr { th { "Class" } th { "Confirmed" } th { "Overturned" } th { "Accuracy" } } }
                tbody {
                    @for a in &q.accuracy {
                        tr {
                            td { (a.class) } td { (a.confirmed) } td { (a.overturned) }
                            td { (percent(a.confirmed, a.confirmed + a.overturned)) }
                        }
                    }
                }
            }
        },
    )
}

pub fn not_found() -> Markup {
    layout("Not found", html! { p { "No such run." } })
}

pub const STYLE: PreEscaped<&str> = PreEscaped(
    "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f8fa}
header{background:#24292f;color:#fff;padding:.6em 1.2em}
nav{display:flex;gap:1.2em;align-items:center}nav a{color:#fff}
.logout{margin-left:auto}main{padding:1em 1.6em;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #d0d7de;padding:.35em .6em;text-align:left;vertical-align:top}
.badge{border-radius:1em;padding:0 .6em;background:#d0d7de}
.succeeded,.fixed,.merged,.resolved,.deliver,.merge{background:#cdf3d6}
.failed,.rejected,.abandoned{background:#ffd7d5}.running,.queued,.open{background:#fff1c2}
li.stage{background:none;margin:.3em 0}.muted{color:#57606a}.error{color:#a40e26}
pre{background:#fff;border:1px solid #d0d7de;padding:.8em;overflow:auto;max-height:30em}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dd{margin:0}
.filters{margin-bottom:1em;display:flex;gap:1em}
.login{max-width:22em;margin:4em auto}.login input{display:block;width:100%;margin:.4em 0 1em}
svg.chart{width:100%;max-width:640px;background:#fff}svg text{font-size:10px;fill:#57606a}
.axis{stroke:#8c959f}polyline{fill:none;stroke-width:2}polyline.p50{stroke:#0969da}polyline.p95{stroke:#cf222e}
span.p50{color:#0969da}span.p95{color:#cf222e}",
);

/// The admins' list of open sessions.
pub fn sessions(open: &[OpenSession]) -> Markup {
    layout(
        "Sessions",
        html! {
            p class="muted" { "Open dashboard sessions. Ending one makes its cookie worthless wherever it was copied to; the person signs in again." }
            table {
                thead { tr { th { "Who" } th { "Actor" } th { "Role" } th { "Via" } th { "Since" } th { "Until" } th {} } }
                tbody {
                    @for s in open {
                        tr {
                            td { (s.name) } td { code { (s.actor) } } td { (s.role) } td { (s.via) }
                            td { (when(s.created_at)) } td { (when(s.expires_at)) }
                            td {
                                form method="post" action={ "/dashboard/admin/sessions/" (s.id) "/end" } {
                                    button type="submit" { "End" }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
