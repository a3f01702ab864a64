//! Who may use web's operator routes (docs/access.md), against a local OpenID Connect provider
//! that refuses what a real one refuses: machines' bearer JWTs (valid, expired, for another
//! audience, from another issuer, forged, without a role), people's sign-in with the code flow
//! and PKCE, every declared route walked with each role, and operators' commands carried out
//! by a worker and written to the audit log with their actor.

use crate::support;

use std::time::Duration;

use github_standin::Knobs;
use oidc_standin::{ClientRegistration, Provider};
use selfheal_shared::config::{AccessRole, Role};
use selfheal_web::access::Need;
use serde_json::{json, Value};
use support::*;

pub(crate) const CLIENT_SECRET: &str = "oidc-client-secret-0123456789";
/// Where people reach web, as the provider knows it; the tests follow its redirects by hand.
pub(crate) const PUBLIC: &str = "http://localhost:9";
pub(crate) const API_AUDIENCE: &str = "selfheal-api";
const TOKEN: &str = "dashboard-token-0123456789abcdef";

pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) async fn with_provider(env: &mut TestEnv) -> Provider {
    let provider = Provider::start(ClientRegistration {
        client_id: "selfheal".into(),
        client_secret: CLIENT_SECRET.into(),
        redirect_uris: vec![format!("{PUBLIC}/dashboard/oidc/callback")],
    })
    .await;
    env.set("OIDC_PROVIDER_URL", &provider.url);
    env.set("OIDC_CLIENT_ID", "selfheal");
    env.set("OIDC_CLIENT_SECRET", CLIENT_SECRET);
    env.set("SELFHEAL_PUBLIC_URL", PUBLIC);
    env.set("SELFHEAL_OIDC_AUDIENCE", API_AUDIENCE);
    env.set("SELFHEAL_OIDC_VIEWERS", "eng");
    env.set("SELFHEAL_OIDC_OPERATORS", "sre");
    env.set("SELFHEAL_OIDC_ADMINS", "platform");
    env.set(
        "SELFHEAL_SESSION_KEY",
        "session-key-0123456789abcdef0123456789",
    );
    provider
}

/// The claim value that grants `role`.
fn group(role: AccessRole) -> &'static str {
    match role {
        AccessRole::Viewer => "eng",
        AccessRole::Operator => "sre",
        AccessRole::Admin => "platform",
    }
}

/// A machine's token with `role`.
fn machine(provider: &Provider, role: AccessRole) -> String {
    provider
        .mint(json!({"sub": format!("bot-{role}"), "aud": API_AUDIENCE, "groups": [group(role)]}))
}

async fn status_with(app: &App, method: &str, path: &str, bearer: Option<&str>) -> u16 {
    let http = no_redirects();
    let url = format!("{}{path}", app.url);
    let mut request = match method {
        "GET" => http.get(url),
        "POST" => http.post(url),
        other => panic!("{other}"),
    };
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

pub(crate) async fn refusals(app: &App) -> Value {
    let text = reqwest::get(format!("{}/metrics", app.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut counts = serde_json::Map::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("selfheal_auth_refusals_total{reason=\"") {
            let (reason, value) = rest.split_once("\"} ").unwrap();
            counts.insert(reason.into(), json!(value.parse::<f64>().unwrap() as i64));
        }
    }
    Value::Object(counts)
}

#[tokio::test]
async fn bearer_tokens_are_validated_against_the_providers_keys_and_roles() {
    let mut env = TestEnv::new().await;
    let provider = with_provider(&mut env).await;
    let app = env.spawn_web().await;
    env.migrate();
    let path = "/dashboard/incidents";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let base = json!({"sub": "bot", "aud": API_AUDIENCE, "groups": ["eng"]});
    let with = |extra: Value| {
        let mut claims = base.clone();
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    };

    assert_eq!(
        status_with(&app, "GET", path, Some(&provider.mint(base.clone()))).await,
        200
    );
    // Expired beyond the minute of leeway; not yet valid.
    let expired = provider.mint(with(
        json!({"iat": now - 7200, "nbf": now - 7200, "exp": now - 120}),
    ));
    assert_eq!(status_with(&app, "GET", path, Some(&expired)).await, 401);
    let early = provider.mint(with(json!({"nbf": now + 600})));
    assert_eq!(status_with(&app, "GET", path, Some(&early)).await, 401);
    // For another audience: people's ID tokens (aud: the client id) are not API tokens.
    let elsewhere = provider.mint(with(json!({"aud": "another-service"})));
    assert_eq!(status_with(&app, "GET", path, Some(&elsewhere)).await, 401);
    let id_token_like = provider.mint(with(json!({"aud": "selfheal"})));
    assert_eq!(
        status_with(&app, "GET", path, Some(&id_token_like)).await,
        401
    );
    // An ID token (it carries its sign-in's nonce) is no API token, whatever its audience.
    let id_token = provider.mint(with(json!({"nonce": "n-0123"})));
    assert_eq!(status_with(&app, "GET", path, Some(&id_token)).await, 401);
    // From another issuer, though signed with the provider's key.
    let other_issuer = provider.mint(with(json!({"iss": "https://evil.example"})));
    assert_eq!(
        status_with(&app, "GET", path, Some(&other_issuer)).await,
        401
    );
    // Forged: the provider's kid, another key; another key under a kid nobody published.
    assert_eq!(
        status_with(&app, "GET", path, Some(&provider.forge(base.clone()))).await,
        401
    );
    let unknown = provider.forge_with_kid("k9", base.clone());
    assert_eq!(status_with(&app, "GET", path, Some(&unknown)).await, 401);
    // Without a role here, or without the claims a token must carry.
    let no_role = provider.mint(with(json!({"groups": ["marketing"]})));
    assert_eq!(status_with(&app, "GET", path, Some(&no_role)).await, 403);
    let no_exp = provider.mint(with(json!({"exp": null})));
    assert_eq!(status_with(&app, "GET", path, Some(&no_exp)).await, 401);
    // Nobody to name in the audit log.
    let no_sub = provider.mint(with(json!({"sub": null})));
    assert_eq!(status_with(&app, "GET", path, Some(&no_sub)).await, 401);
    // `alg: none`, and an HMAC keyed with something public: never.
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let claims = with(json!({"iss": provider.url, "exp": now + 600}));
    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims)
    );
    assert_eq!(status_with(&app, "GET", path, Some(&unsigned)).await, 401);
    let hmac = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: Some("k1".into()),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(CLIENT_SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(status_with(&app, "GET", path, Some(&hmac)).await, 401);
    // A viewer may read but not act; an operator may act.
    let viewer = machine(&provider, AccessRole::Viewer);
    assert_eq!(
        status_with(
            &app,
            "POST",
            &format!("/dashboard/runs/{}/stop", uuid::Uuid::new_v4()),
            Some(&viewer)
        )
        .await,
        403
    );
    let operator = machine(&provider, AccessRole::Operator);
    assert_eq!(
        status_with(
            &app,
            "POST",
            &format!("/dashboard/runs/{}/stop", uuid::Uuid::new_v4()),
            Some(&operator)
        )
        .await,
        404,
        "past the gate: no such run"
    );

    // Each refusal is counted by its reason.
    let counted = refusals(&app).await;
    for (reason, n) in [
        ("expired", 2),
        ("audience", 3),
        ("issuer", 1),
        ("signature", 1),
        ("no_role", 1),
        ("malformed", 4),
        ("forbidden", 1),
        ("unknown_key", 1),
    ] {
        assert_eq!(counted[reason], n, "{reason}: {counted}");
    }
}

/// A key rotation as providers do it: the next key is published beside the current one, then
/// the current one is retired. web reads the JWKS again for a kid it has not seen (not more
/// than every 30 s) and once the JWKS's `max-age` has passed, so a retired key stops working.
#[tokio::test]
async fn keys_the_provider_rotates_in_are_taken_and_keys_it_retires_are_refused() {
    let mut env = TestEnv::new().await;
    let provider = with_provider(&mut env).await;
    // Shorter than web's floor of 30 s: web waits the floor.
    provider.set_jwks_max_age(1);
    let app = env.spawn_web().await;
    env.migrate();
    let path = "/dashboard/incidents";
    let claims = json!({"sub": "bot", "aud": API_AUDIENCE, "groups": ["eng"]});
    let current = provider.mint(claims.clone());
    let next = provider.mint_with_next_key(claims);
    let wait_out_the_floor = || tokio::time::sleep(Duration::from_secs(31));

    assert_eq!(status_with(&app, "GET", path, Some(&current)).await, 200);
    provider.publish_next_key();
    // The keys were read moments ago: an unknown kid does not make web read them again yet.
    assert_eq!(status_with(&app, "GET", path, Some(&next)).await, 401);
    wait_out_the_floor().await;
    assert_eq!(status_with(&app, "GET", path, Some(&next)).await, 200);
    assert_eq!(status_with(&app, "GET", path, Some(&current)).await, 200);

    provider.retire_first_key();
    wait_out_the_floor().await;
    // Past its max-age the set is read again, and the retired key is gone from it.
    assert_eq!(status_with(&app, "GET", path, Some(&current)).await, 401);
    assert_eq!(status_with(&app, "GET", path, Some(&next)).await, 200);
    let counted = refusals(&app).await;
    assert_eq!(counted["unknown_key"], 2, "{counted}");
}

/// The provider's JWKS down once the keys are past their age: the keys read before go on
/// serving (for an hour past their age, docs/access.md), and a kid they do not hold is refused
/// as the provider's outage, not as a forgery.
#[tokio::test]
async fn known_keys_serve_through_a_providers_outage() {
    let mut env = TestEnv::new().await;
    let provider = with_provider(&mut env).await;
    provider.set_jwks_max_age(1);
    let app = env.spawn_web().await;
    env.migrate();
    let path = "/dashboard/incidents";
    let claims = json!({"sub": "bot", "aud": API_AUDIENCE, "groups": ["eng"]});
    let current = provider.mint(claims.clone());
    assert_eq!(status_with(&app, "GET", path, Some(&current)).await, 200);
    provider.set_jwks_down(true);
    tokio::time::sleep(Duration::from_secs(31)).await;
    // The first request past the keys' age reads them again, cannot, and is served with the
    // keys it has; a kid they do not hold is then the provider's outage, not a forgery.
    assert_eq!(status_with(&app, "GET", path, Some(&current)).await, 200);
    let unknown = provider.mint_with_next_key(claims);
    assert_eq!(status_with(&app, "GET", path, Some(&unknown)).await, 503);
    assert_eq!(status_with(&app, "GET", path, Some(&current)).await, 200);
    let counted = refusals(&app).await;
    assert_eq!(counted["provider_unreachable"], 1, "{counted}");
    assert_eq!(counted["unknown_key"], 0, "{counted}");
    // Back up: the next read (30 s on) brings the keys again.
    provider.set_jwks_down(false);
    provider.publish_next_key();
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(status_with(&app, "GET", path, Some(&unknown)).await, 200);
}

#[tokio::test]
async fn every_route_declares_what_it_needs_and_none_is_reachable_without_it() {
    let mut env = TestEnv::new().await;
    let provider = with_provider(&mut env).await;
    env.set("SELFHEAL_DASHBOARD_TOKEN", TOKEN);
    let app = env.spawn_web().await;
    env.migrate();
    let declared = selfheal_web::declared_routes(&env.config(Role::Web));
    // What every route needs, written out here rather than read from the declarations (a
    // route declared with too low a role must fail this test), as docs/access.md lists it.
    let (viewer, operator, admin) = (
        Need::Role(AccessRole::Viewer),
        Need::Role(AccessRole::Operator),
        Need::Role(AccessRole::Admin),
    );
    let mut expected = vec![
        ("POST", "/webhooks/github", Need::WebhookSignature),
        ("GET", "/healthz", Need::Public),
        ("GET", "/readyz", Need::Public),
        ("GET", "/metrics", Need::Public),
        ("GET", "/dashboard/login", Need::Public),
        ("POST", "/dashboard/login", Need::Public),
        ("POST", "/dashboard/logout", Need::Public),
        ("GET", "/dashboard/style.css", Need::Public),
        ("GET", "/dashboard/oidc/login", Need::Public),
        ("GET", "/dashboard/oidc/callback", Need::Public),
        ("GET", "/dashboard", viewer),
        ("GET", "/dashboard/runs/{id}", viewer),
        ("GET", "/dashboard/incidents", viewer),
        ("GET", "/dashboard/quality", viewer),
        ("POST", "/dashboard/runs/{id}/retry", operator),
        ("POST", "/dashboard/runs/{id}/stop", operator),
        ("POST", "/dashboard/runs/{id}/approve", operator),
        ("GET", "/dashboard/admin/config", admin),
        ("GET", "/dashboard/admin/policies", admin),
        ("GET", "/dashboard/admin/sessions", admin),
        ("POST", "/dashboard/admin/sessions/{id}/end", admin),
    ];
    let mut got: Vec<(&str, &str, Need)> = declared
        .iter()
        .map(|r| (r.method.as_str(), r.path, r.need))
        .collect();
    expected.sort_by_key(|(m, p, _)| (*p, *m));
    got.sort_by_key(|(m, p, _)| (*p, *m));
    assert_eq!(got, expected);
    let mut with_role = 0;
    let run = uuid::Uuid::new_v4().to_string();
    for route in &declared {
        let method = route.method.as_str();
        let path = route.path.replace("{id}", &run);
        match route.need {
            // Served to anyone (a page, a redirect, or a refused form: never 404 or 405).
            Need::Public => {
                let got = status_with(&app, method, &path, None).await;
                assert!(![404, 405].contains(&got), "{method} {path}: {got}");
            }
            Need::WebhookSignature => {
                assert_eq!(status_with(&app, method, &path, None).await, 401, "{path}");
            }
            Need::Role(role) => {
                with_role += 1;
                // Without credentials: sent to sign in, or refused.
                let anonymous = status_with(&app, method, &path, None).await;
                let expected = if method == "GET" { 303 } else { 401 };
                assert_eq!(anonymous, expected, "{method} {path} without credentials");
                // With every role below its own: refused.
                for lower in AccessRole::ALL.into_iter().filter(|r| *r < role) {
                    let token = machine(&provider, lower);
                    assert_eq!(
                        status_with(&app, method, &path, Some(&token)).await,
                        403,
                        "{method} {path} as {lower}"
                    );
                }
                // The operators' token is a viewer here (SELFHEAL_DASHBOARD_TOKEN_ROLE unset).
                let by_token = status_with(&app, method, &path, Some(TOKEN)).await;
                if role > AccessRole::Viewer {
                    assert_eq!(by_token, 403, "{method} {path} with the viewer's token");
                } else {
                    assert!(
                        [200, 404].contains(&by_token),
                        "{method} {path}: {by_token}"
                    );
                }
                // With its role: past the gate (a page, or 404 for a run that does not exist).
                let token = machine(&provider, role);
                let got = status_with(&app, method, &path, Some(&token)).await;
                assert!(
                    got == 200 || (got == 404 && path.contains(&run)),
                    "{method} {path} as {role}: {got}"
                );
            }
        }
    }
    assert_eq!(with_role, 11, "{declared:#?}");
    // Each lower role's refusal was the gate's (`forbidden`), not a token's.
    let counted = refusals(&app).await;
    // Operator routes: a viewer's JWT and the viewer's token (3 × 2); admin routes: a
    // viewer's and an operator's JWT and the token (4 × 3).
    assert_eq!(counted["forbidden"], 3 * 2 + 4 * 3, "{counted}");
}

/// Routes are added in one place: the table that declares them (`access::Routes`, whose
/// router nothing else can reach; `/metrics` on its own port too). A router made anywhere
/// else would serve routes undeclared.
#[test]
fn routers_are_made_only_by_the_table() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut found = Vec::new();
    let mut dirs = vec![root.join("web/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let text = std::fs::read_to_string(&path).unwrap();
                let file = path.strip_prefix(&root).unwrap().display().to_string();
                for line in text.lines().filter(|l| l.contains("Router::new()")) {
                    found.push((file.clone(), line.trim().to_string()));
                }
            }
        }
    }
    found.sort();
    assert_eq!(
        found,
        [(
            "web/src/access/mod.rs".to_string(),
            "router: Router::new(),".to_string()
        )]
    );
}

#[tokio::test]
async fn an_operators_stop_and_retry_from_the_dashboard_are_carried_out_and_audited() {
    let mut env = TestEnv::new().await;
    let provider = with_provider(&mut env).await;
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(7301, &now()))
        .await;
    let run = env.run_of(&body).await;
    env.wait_run(run, Duration::from_secs(60)).await;
    let http = no_redirects();
    let act = |action: &str, token: String| {
        http.post(format!("{}/dashboard/runs/{run}/{action}", app.url))
            .bearer_auth(token)
            .send()
    };

    // A viewer cannot; nothing is stored.
    let r = act("stop", machine(&provider, AccessRole::Viewer))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(env.count("SELECT count(*) FROM commands").await, 0);
    // ... and the refusal of someone known is in the audit log.
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM audit_log WHERE action = 'dashboard.refused' AND actor = 'oidc:bot-viewer'
               AND subject = '/dashboard/runs/{run}/stop' AND detail->>'needed' = 'operator'"
        ))
        .await,
        1
    );

    let operator = provider.mint(json!({"sub": "carol-3", "email": "carol@example.com", "aud": API_AUDIENCE, "groups": ["sre"]}));
    let r = act("stop", operator.clone()).await.unwrap();
    assert_eq!(r.status(), 202);
    let stop: Value = r.json().await.unwrap();
    let stop = stop["command_id"].as_i64().unwrap();
    assert_eq!(env.command_status(stop).await, "done");
    assert_eq!(
        env.count("SELECT count(*) FROM incidents WHERE stopped_by = 'oidc:carol-3'")
            .await,
        1
    );
    // The PR says who asked, without @-mentioning anyone.
    let said = env.standin.comments();
    let last = said.last().unwrap()["body"].as_str().unwrap().to_string();
    assert!(
        last.contains(&format!(
            "An operator on selfheal's dashboard (command {stop})"
        )),
        "{last}"
    );
    assert!(!last.contains('@') && !last.contains("carol"), "{last}");

    let r = act("retry", operator).await.unwrap();
    assert_eq!(r.status(), 202);
    let retry: Value = r.json().await.unwrap();
    assert_eq!(
        env.command_status(retry["command_id"].as_i64().unwrap())
            .await,
        "done"
    );
    assert!(env
        .standin
        .calls()
        .iter()
        .any(|c| c.path.ends_with("/rerun-failed-jobs")));
    assert_eq!(
        env.count("SELECT count(*) FROM incidents WHERE stopped_at IS NOT NULL")
            .await,
        0,
        "retry resumes"
    );

    // A dashboard command stored with a viewer's role (web never stores one) does nothing:
    // the worker checks the role again.
    let db = env.db().await;
    let smuggled: i64 = db
        .query_one(
            "INSERT INTO commands (source, role, installation_id, repository_id, repository_full_name,
                                   actor, command, incident_id)
             SELECT 'dashboard', 'viewer', r.installation_id, i.repository_id, r.repository_full_name,
                    'oidc:mallory', 'stop', r.incident_id
             FROM runs r JOIN incidents i ON i.id = r.incident_id WHERE r.id = $1 RETURNING id",
            &[&run],
        )
        .await
        .unwrap()
        .get(0);
    db.execute("INSERT INTO outbox (command_id) VALUES ($1)", &[&smuggled])
        .await
        .unwrap();
    assert_eq!(env.command_status(smuggled).await, "refused");
    assert_eq!(
        env.count("SELECT count(*) FROM incidents WHERE stopped_at IS NOT NULL")
            .await,
        0
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE actor = 'oidc:mallory' AND action = 'command.refused'").await,
        1
    );

    // The audit log: who, what, on what, and how it ended.
    let audit: Vec<(String, String, String)> = db
        .query(
            "SELECT actor, action, coalesce(detail->>'source', detail->>'via') FROM audit_log
             WHERE action LIKE 'command.%' AND actor <> 'oidc:mallory' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let carol = "oidc:carol-3".to_string();
    assert_eq!(
        audit,
        vec![
            (carol.clone(), "command.received".into(), "dashboard".into()),
            (carol.clone(), "command.done".into(), "dashboard".into()),
            (carol.clone(), "command.received".into(), "dashboard".into()),
            (carol, "command.done".into(), "dashboard".into()),
        ]
    );
}

/// An approval from the dashboard names the fix commit the operator saw on the run page, and
/// the worker merges that commit or nothing: not one that is not selfheal's fix as it stands.
#[tokio::test]
async fn an_operators_approval_merges_the_commit_they_saw_or_nothing() {
    let mut env = TestEnv::new().await;
    let provider = with_provider(&mut env).await;
    env.standin.set_knobs(Knobs {
        // Not merged by policy: a person has to approve.
        repo_config: Some("auto_merge_classes: []\n".into()),
        fix_checks: green_checks(),
        ..Knobs::default()
    });
    let app = env.spawn_web().await;
    let _worker = env.spawn_worker("w");
    let (_, body) = app
        .deliver("workflow_run", &env.failing_run(7311, &now()))
        .await;
    let run = env.run_of(&body).await;
    env.wait_run(run, Duration::from_secs(60)).await;
    let fix: String = env
        .db()
        .await
        .query_one(
            "SELECT commit_sha FROM fix_attempts WHERE pushed_at IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let operator = provider.mint(json!({"sub": "carol-3", "aud": API_AUDIENCE, "groups": ["sre"]}));
    let http = no_redirects();

    // The run page's approve form carries the fix commit it shows.
    let page = http
        .get(format!("{}/dashboard/runs/{run}", app.url))
        .bearer_auth(&operator)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(&format!(r#"name="head" value="{fix}""#)),
        "{page}"
    );

    let approve = |form: Option<&str>| {
        let mut request = http
            .post(format!("{}/dashboard/runs/{run}/approve", app.url))
            .bearer_auth(&operator);
        if let Some(head) = form {
            request = request.form(&[("head", head)]);
        }
        request.send()
    };
    // Without a head, or with something that is not a commit id: refused, nothing stored.
    for form in [None, Some("HEAD"), Some(&fix[..12])] {
        let r = approve(form).await.unwrap();
        assert_eq!(r.status(), 422, "{form:?}");
        assert!(r.text().await.unwrap().contains("head="));
    }
    assert_eq!(env.count("SELECT count(*) FROM commands").await, 0);

    // Selfheal pushes again after the operator looked (here: GitHub merges the base into the
    // fix's branch at selfheal's request, `update-branch`): the approval of what the page
    // showed merges nothing.
    let (branch, _) = env.pull(1);
    let git = GitData::new(&env);
    let tree = git.tree_of(&fix).await;
    let updated = git
        .commit(tree, &[&fix], "Merge branch 'master' into the fix", None)
        .await;
    git.move_branch(&branch, &updated, false).await;
    env.db()
        .await
        .execute(
            "UPDATE deliveries SET branch_updated_sha = $1, branch_updated_at = now()",
            &[&updated],
        )
        .await
        .unwrap();
    let r = approve(Some(&fix)).await.unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["command_id"]
        .as_i64()
        .unwrap();
    assert_eq!(env.command_status(id).await, "refused");
    let answer = env.standin.comments().last().unwrap()["body"].to_string();
    assert!(
        answer.contains(&format!(
            "the approval was for {}, but selfheal's fix is now {}",
            &fix[..7],
            &updated[..7]
        )),
        "{answer}"
    );
    assert_eq!(env.standin.pulls()[0]["merged"], false);
    let fix = updated;

    // The commit the page showed: merged, decided by the operator.
    let r = approve(Some(&fix)).await.unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["command_id"]
        .as_i64()
        .unwrap();
    assert_eq!(env.command_status(id).await, "done");
    assert_eq!(env.standin.pulls()[0]["merged"], true);
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM deliveries WHERE decided_by = 'oidc:carol-3' AND merged_at IS NOT NULL
               AND EXISTS (SELECT 1 FROM commands WHERE id = {id} AND approved_head = '{fix}')"
        ))
        .await,
        1
    );
}

/// A dashboard approval stored before approvals named a commit (V30), still waiting when V31
/// is applied, is failed and said so in the audit log, not carried out on what the operator
/// may not have seen; one that was done stays done, and the worker can still finish a row.
#[tokio::test]
async fn an_approval_queued_before_approvals_named_a_commit_is_failed_by_the_migration() {
    let env = TestEnv::new().await;
    let mut db = env.db().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name[1..name.find("__").unwrap()].parse::<u32>().unwrap()
    });
    let migrations: Vec<refinery::Migration> = files
        .iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            refinery::Migration::unapplied(&name, &std::fs::read_to_string(p).unwrap()).unwrap()
        })
        .collect();
    refinery::Runner::new(&migrations)
        .set_target(refinery::Target::Version(30))
        .run_async(&mut db)
        .await
        .unwrap();
    db.batch_execute(
        "INSERT INTO installations (id, account_login) VALUES (1, 'octo-org');
         INSERT INTO repositories (id, installation_id, full_name) VALUES (2, 1, 'octo-org/octo-repo');
         INSERT INTO incidents (id, repository_id, head_repository_id, branch, workflow_id, status, first_failed_at)
         VALUES ('00000000-0000-0000-0000-000000000001', 2, 2, 'main', 3, 'open', now());
         INSERT INTO commands (source, role, installation_id, repository_id, repository_full_name, actor, command, incident_id, status)
         VALUES ('dashboard', 'operator', 1, 2, 'octo-org/octo-repo', 'oidc:carol-3', 'approve',
                 '00000000-0000-0000-0000-000000000001', 'queued'),
                ('dashboard', 'operator', 1, 2, 'octo-org/octo-repo', 'oidc:carol-3', 'approve',
                 '00000000-0000-0000-0000-000000000001', 'done'),
                ('dashboard', 'operator', 1, 2, 'octo-org/octo-repo', 'oidc:carol-3', 'stop',
                 '00000000-0000-0000-0000-000000000001', 'queued');
         INSERT INTO webhook_deliveries (delivery_id, event, outcome, payload)
         VALUES ('d-1', 'issue_comment', 'command_queued', '{}');
         INSERT INTO commands (source, delivery_id, comment_id, issue_number, installation_id, repository_id,
                               repository_full_name, actor, command, status)
         VALUES ('comment', 'd-1', 11, 1, 1, 2, 'octo-org/octo-repo', 'octocat', 'approve', 'queued');",
    )
    .await
    .unwrap();
    env.migrate();
    let rows: Vec<(String, String)> = db
        .query("SELECT command, status FROM commands ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let row = |c: &str, s: &str| (c.to_string(), s.to_string());
    assert_eq!(
        rows,
        vec![
            row("approve", "failed"),
            row("approve", "done"),
            row("stop", "queued"),
            // A comment's approval covers what selfheal had pushed when it was written.
            row("approve", "queued"),
        ]
    );
    assert_eq!(
        env.count("SELECT count(*) FROM audit_log WHERE action = 'command.failed' AND subject = 'command:1'")
            .await,
        1
    );
    // The worker finishes any row, an approval with no commit among them; a new dashboard
    // approval without a commit is refused.
    db.execute(
        "UPDATE commands SET status = 'refused', result = 'again' WHERE id = 2",
        &[],
    )
    .await
    .unwrap();
    let refused = db
        .execute(
            "INSERT INTO commands (source, role, installation_id, repository_id, repository_full_name, actor, command, incident_id)
             VALUES ('dashboard', 'operator', 1, 2, 'octo-org/octo-repo', 'oidc:carol-3', 'approve',
                     '00000000-0000-0000-0000-000000000001')",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.as_db_error().and_then(|e| e.constraint()),
        Some("commands_approval_names_head"),
        "{refused:?}"
    );
}
