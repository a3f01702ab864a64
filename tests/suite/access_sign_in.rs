//! People's sign-in through the organisation's OpenID Connect provider (docs/access.md): the
//! code flow with PKCE against the local provider, and every way it must fail without a
//! session.

use crate::access::{no_redirects, refusals, with_provider, API_AUDIENCE, PUBLIC};
use crate::support;

use oidc_standin::Provider;
use serde_json::{json, Value};
use support::*;

struct SignIn {
    status: u16,
    cookie: Option<String>,
    /// The answer cleared the sign-in's own cookie.
    pending_cleared: bool,
    body: String,
}

/// A person's sign-in through the provider, redirects followed by hand; `tamper` may change
/// the callback's URL before the browser follows it.
async fn sign_in(
    app: &App,
    provider: &Provider,
    person: Value,
    tamper: impl Fn(String) -> String,
) -> SignIn {
    let http = no_redirects();
    let start = http
        .get(format!("{}/dashboard/oidc/login", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 303);
    let authorize = start.headers()["location"].to_str().unwrap().to_string();
    let pending = start.headers()["set-cookie"].to_str().unwrap().to_string();
    assert_host_only(&pending, "__Host-selfheal_oidc", "SameSite=Lax");
    let pending = pending.split(';').next().unwrap().to_string();
    assert!(
        authorize.starts_with(&format!("{}/authorize?", provider.url)),
        "{authorize}"
    );
    let query: Vec<(String, String)> = reqwest::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(param("code_challenge_method").as_deref(), Some("S256"));
    assert!(param("nonce").is_some() && param("state").is_some());

    provider.sign_in_as(person);
    let at_provider = http.get(&authorize).send().await.unwrap();
    assert_eq!(at_provider.status(), 303);
    let back = at_provider.headers()["location"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(back.starts_with(PUBLIC), "{back}");
    let back = tamper(back.replacen(PUBLIC, &app.url, 1));
    let answer = http
        .get(back)
        .header("cookie", &pending)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    let cookie = answer
        .headers()
        .get("set-cookie")
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string());
    // Cleared as browsers take a `__Host-` deletion: with the attributes it was set with.
    let pending_cleared = answer.headers().get_all("set-cookie").iter().any(|c| {
        let c = c.to_str().unwrap();
        let clears = c.starts_with("__Host-selfheal_oidc=;") && c.contains("Max-Age=0");
        if clears {
            assert_host_only(c, "__Host-selfheal_oidc", "SameSite=Lax");
        }
        clears
    });
    SignIn {
        status,
        cookie,
        pending_cleared,
        body: answer.text().await.unwrap(),
    }
}

#[tokio::test]
async fn people_sign_in_with_the_code_flow_and_pkce_and_refusals_leave_no_session() {
    let mut env = TestEnv::new().await;
    let provider = with_provider(&mut env).await;
    let app = env.spawn_web().await;
    env.migrate();
    let alice = json!({"sub": "alice-1", "email": "alice@example.com", "email_verified": true,
                       "groups": ["eng", "sre"]});

    let ok = sign_in(&app, &provider, alice.clone(), |u| u).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("alice@example.com"), "{}", ok.body);
    let session = ok.cookie.expect("a session");
    assert!(ok.pending_cleared, "the spent sign-in's cookie is cleared");
    // An e-mail the provider has not verified is not shown as who someone is.
    let dave = sign_in(
        &app,
        &provider,
        json!({"sub": "dave-4", "email": "ceo@example.com", "preferred_username": "dave",
               "groups": ["eng"]}),
        |u| u,
    )
    .await;
    assert_eq!(dave.status, 200, "{}", dave.body);
    assert!(
        dave.body.contains("dave") && !dave.body.contains("ceo@example.com"),
        "{}",
        dave.body
    );
    let http = no_redirects();
    let runs = http
        .get(format!("{}/dashboard", app.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(runs.status(), 200);
    // Alice is an operator, not an admin.
    let config = http
        .get(format!("{}/dashboard/admin/config", app.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(config.status(), 403);
    // A form another site makes her browser send is refused, though the session is hers.
    let cross = http
        .post(format!(
            "{}/dashboard/runs/{}/stop",
            app.url,
            uuid::Uuid::new_v4()
        ))
        .header("cookie", &session)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);
    let same = http
        .post(format!(
            "{}/dashboard/runs/{}/stop",
            app.url,
            uuid::Uuid::new_v4()
        ))
        .header("cookie", &session)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 404, "past the gate: no such run");

    // The callback's state must be the one this browser started with: no code is exchanged
    // otherwise.
    let asked = provider.token_requests();
    let forged_state = sign_in(&app, &provider, alice.clone(), |u| {
        u.replace("state=", "state=x")
    })
    .await;
    assert_eq!(forged_state.status, 401);
    assert!(forged_state.cookie.is_none());
    assert_eq!(provider.token_requests(), asked);
    // A code exchanged with another PKCE verifier (a code stolen on its way back, replayed
    // from another sign-in): the provider refuses it, so does web.
    let stolen_code = std::sync::Mutex::new(None::<String>);
    let _ = sign_in(&app, &provider, alice.clone(), |u| {
        *stolen_code.lock().unwrap() = Some(u.clone());
        u.replace("code=", "code=spent")
    })
    .await;
    let stolen = stolen_code.lock().unwrap().clone().unwrap();
    let code = reqwest::Url::parse(&stolen)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let replayed = sign_in(&app, &provider, alice.clone(), |u| {
        let url = reqwest::Url::parse(&u).unwrap();
        let state = url
            .query_pairs()
            .find(|(k, _)| k == "state")
            .unwrap()
            .1
            .into_owned();
        format!(
            "{}/dashboard/oidc/callback?code={code}&state={state}",
            app.url
        )
    })
    .await;
    assert_eq!(replayed.status, 401, "{}", replayed.body);
    assert!(replayed.cookie.is_none());
    // Signed in at the provider but without a role here.
    let bob = sign_in(
        &app,
        &provider,
        json!({"sub": "bob-2", "email": "bob@example.com", "groups": ["marketing"]}),
        |u| u,
    )
    .await;
    assert_eq!(bob.status, 403);
    assert!(bob.cookie.is_none());
    // An ID token the provider got wrong, or someone else made: each refused, no session.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for (claims, forged, label) in [
        (
            json!({"exp": now - 120, "iat": now - 900}),
            false,
            "expired",
        ),
        (json!({"aud": "another-client"}), false, "audience"),
        (json!({"iss": "https://evil.example"}), false, "issuer"),
        (json!({}), true, "signature"),
        (json!({"nonce": "another-sign-in"}), false, "nonce"),
        // Issued for several audiences, or to another party, though selfheal is among them.
        (
            json!({"aud": ["selfheal", "another-client"]}),
            false,
            "audience",
        ),
        (json!({"azp": "another-client"}), false, "audience"),
    ] {
        let before = refusals(&app).await[label].as_i64().unwrap();
        provider.tamper_next_id_token(claims, forged);
        let tampered = sign_in(&app, &provider, alice.clone(), |u| u).await;
        assert_eq!(tampered.status, 401, "{label}: {}", tampered.body);
        assert!(tampered.cookie.is_none(), "{label}");
        assert_eq!(
            refusals(&app).await[label].as_i64().unwrap(),
            before + 1,
            "{label}"
        );
    }
    // The sign-out form, sent from another site, is refused as the others are.
    let r = no_redirects()
        .post(format!("{}/dashboard/logout", app.url))
        .header("cookie", &session)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Nobody at the provider's page (the person cancelled).
    provider.nobody_signs_in();
    let http2 = no_redirects();
    let start = http2
        .get(format!("{}/dashboard/oidc/login", app.url))
        .send()
        .await
        .unwrap();
    let pending = start.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let authorize = start.headers()["location"].to_str().unwrap().to_string();
    let back = http2.get(&authorize).send().await.unwrap();
    let back = back.headers()["location"]
        .to_str()
        .unwrap()
        .replacen(PUBLIC, &app.url, 1);
    assert!(back.contains("error=access_denied"), "{back}");
    let cancelled = http2
        .get(back)
        .header("cookie", pending)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 401);
    assert!(cancelled.headers().get("set-cookie").is_none());

    // Every sign-in, done or refused, is in the audit log.
    let db = env.db().await;
    let logins: Vec<(String, String)> = db
        .query(
            "SELECT actor, detail->>'outcome' FROM audit_log WHERE action = 'dashboard.login' ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        logins[0],
        ("oidc:alice-1".to_string(), "signed_in".to_string())
    );
    // The forged state is not recorded: until the state matches, a request is anyone's.
    assert_eq!(logins.len(), 13, "{logins:?}");
    assert_eq!(
        logins[1],
        ("oidc:dave-4".to_string(), "signed_in".to_string())
    );
    assert!(logins.contains(&("oidc:bob-2".to_string(), "refused".to_string())));
    assert!(
        logins[2..].iter().all(|(_, o)| o == "refused"),
        "{logins:?}"
    );
    let counted = refusals(&app).await;
    assert_eq!(counted["login_error"], 1, "{counted}");
    assert_eq!(counted["provider_unreachable"], 0, "{counted}");
    assert_eq!(counted["no_role"], 1, "{counted}");
    // The spent code, the code under another verifier, the cancelled sign-in.
    assert_eq!(counted["provider_refused"], 3, "{counted}");
    assert_eq!(counted["cross_site"], 2, "{counted}");
}

/// A session ends on the server: signing out, or an admin ending it, makes its cookie worth
/// nothing wherever it was copied to.
#[tokio::test]
async fn a_session_ends_on_the_server_at_sign_out_or_by_an_admin() {
    const TOKEN: &str = "operators-token-0123456789abcdef";
    let mut env = TestEnv::new().await;
    let provider = with_provider(&mut env).await;
    env.set("SELFHEAL_DASHBOARD_TOKEN", TOKEN);
    let app = env.spawn_web().await;
    env.migrate();
    let http = no_redirects();
    let dashboard = |cookie: String| {
        http.get(format!("{}/dashboard", app.url))
            .header("cookie", cookie)
            .send()
    };
    let sign_out = |cookie: &str| {
        http.post(format!("{}/dashboard/logout", app.url))
            .header("cookie", cookie)
            .send()
    };
    let alice = sign_in(
        &app,
        &provider,
        json!({"sub": "alice-1", "groups": ["eng"]}),
        |u| u,
    )
    .await
    .cookie
    .expect("a session");
    let copied = alice.clone();
    assert_eq!(dashboard(alice.clone()).await.unwrap().status(), 200);
    assert_eq!(sign_out(&alice).await.unwrap().status(), 303);
    // The copy is sent to sign in.
    assert_eq!(dashboard(copied).await.unwrap().status(), 303);

    let bob = sign_in(
        &app,
        &provider,
        json!({"sub": "bob-2", "groups": ["eng"]}),
        |u| u,
    )
    .await
    .cookie
    .expect("a session");
    assert_eq!(dashboard(bob.clone()).await.unwrap().status(), 200);
    let admin =
        provider.mint(json!({"sub": "root-9", "aud": API_AUDIENCE, "groups": ["platform"]}));
    let listed = http
        .get(format!("{}/dashboard/admin/sessions", app.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let listed = listed.text().await.unwrap();
    assert!(listed.contains("oidc:bob-2"), "{listed}");
    assert!(
        !listed.contains("oidc:alice-1"),
        "an ended session is not listed"
    );
    let db = env.db().await;
    let id: uuid::Uuid = db
        .query_one(
            "SELECT id FROM dashboard_sessions WHERE actor = 'oidc:bob-2' AND ended_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let end = || {
        http.post(format!("{}/dashboard/admin/sessions/{id}/end", app.url))
            .bearer_auth(&admin)
            .send()
    };
    assert_eq!(end().await.unwrap().status(), 204);
    assert_eq!(dashboard(bob).await.unwrap().status(), 303);
    assert_eq!(end().await.unwrap().status(), 404, "ended already");

    // An admin signed in as a person ends one from the list's form, but not from another
    // site; a viewer cannot at all.
    let person = |sub: &'static str, group: &'static str| {
        let (app, provider) = (&app, &provider);
        async move {
            sign_in(app, provider, json!({"sub": sub, "groups": [group]}), |u| u)
                .await
                .cookie
                .expect("a session")
        }
    };
    let root = person("root-9", "platform").await;
    let carol = person("carol-3", "eng").await;
    let carol_id: uuid::Uuid = db
        .query_one(
            "SELECT id FROM dashboard_sessions WHERE actor = 'oidc:carol-3'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let end_as = |cookie: &str, site: &str| {
        http.post(format!(
            "{}/dashboard/admin/sessions/{carol_id}/end",
            app.url
        ))
        .header("cookie", cookie)
        .header("sec-fetch-site", site)
        .send()
    };
    assert_eq!(end_as(&carol, "same-origin").await.unwrap().status(), 403);
    assert_eq!(end_as(&root, "cross-site").await.unwrap().status(), 403);
    assert_eq!(dashboard(carol.clone()).await.unwrap().status(), 200);
    let ended = end_as(&root, "same-origin").await.unwrap();
    assert_eq!(ended.status(), 303);
    assert_eq!(ended.headers()["location"], "/dashboard/admin/sessions");
    assert_eq!(dashboard(carol).await.unwrap().status(), 303);

    // The operators' token's sessions end the same way.
    let by_token = crate::dashboard::signed_in_with(&app, TOKEN).await;
    assert_eq!(dashboard(by_token.clone()).await.unwrap().status(), 200);
    assert_eq!(sign_out(&by_token).await.unwrap().status(), 303);
    assert_eq!(dashboard(by_token).await.unwrap().status(), 303);

    // Rotating the operators' token ends the sessions signed with it (and, the key being one,
    // every other): a web started with the new token opens none of them.
    let before_rotation = person("root-9", "platform").await;
    env.set(
        "SELFHEAL_DASHBOARD_TOKEN",
        "operators-token-rotated-0123456789",
    );
    let rotated = env.spawn_web().await;
    let r = http
        .get(format!("{}/dashboard", rotated.url))
        .header("cookie", &before_rotation)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "a session from before the rotation");

    // Who ended which, in the audit log and on the row.
    let ended: Vec<(String, String, String)> = db
        .query(
            "SELECT actor, action, detail->>'of' FROM audit_log
             WHERE action IN ('dashboard.logout', 'dashboard.session_ended') ORDER BY seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let row = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(
        ended,
        vec![
            row("oidc:alice-1", "dashboard.logout", "oidc:alice-1"),
            row("oidc:root-9", "dashboard.session_ended", "oidc:bob-2"),
            row("oidc:root-9", "dashboard.session_ended", "oidc:carol-3"),
            row("dashboard-token", "dashboard.logout", "dashboard-token"),
        ]
    );
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) FROM dashboard_sessions WHERE id = '{id}' AND ended_by = 'oidc:root-9'"
        ))
        .await,
        1
    );
}
