//! The stand-in refuses what GitHub refuses, so that a test passing against it means
//! something: forged, expired or foreign App JWTs; unknown, expired, revoked or out-of-scope
//! installation tokens.

mod support;

use serde_json::{json, Value};
use support::*;

async fn exchange(env: &TestEnv, jwt: &str, installation: i64, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!(
            "{}/app/installations/{installation}/access_tokens",
            env.standin.url()
        ))
        .bearer_auth(jwt)
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

async fn get(env: &TestEnv, token: &str, path: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{}{path}", env.standin.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn only_the_apps_own_current_jwt_gets_a_token() {
    let env = TestEnv::new().await;
    let good = app_jwt();
    let (status, token) = exchange(&env, &good, INSTALLATION_ID, json!({})).await;
    assert_eq!(status, 201, "{token}");

    let now = chrono::Utc::now().timestamp();
    let public = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("standin/demo-app-key.pub.pem"),
    )
    .unwrap();
    let forged = [
        // Signed by another key.
        (
            "another key",
            app_jwt_with(1, "tests/keys/another-app-key.pem", -60, 540),
        ),
        // Expired a minute ago.
        (
            "expired",
            app_jwt_with(1, "standin/demo-app-key.pem", -660, -60),
        ),
        // GitHub refuses an expiry more than ten minutes after issue.
        (
            "exp too far",
            app_jwt_with(1, "standin/demo-app-key.pem", -60, 3600),
        ),
        // Issued in the future.
        (
            "iat ahead",
            app_jwt_with(1, "standin/demo-app-key.pem", 300, 540),
        ),
        // Another App's id.
        (
            "another app",
            app_jwt_with(2, "standin/demo-app-key.pem", -60, 540),
        ),
        // The algorithm-confusion attack: HS256 keyed with the public key.
        (
            "hs256 with the public key",
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
                &json!({"iat": now - 60, "exp": now + 540, "iss": 1}),
                &jsonwebtoken::EncodingKey::from_secret(&public),
            )
            .unwrap(),
        ),
        // The shape of a JWT, no signature.
        ("unsigned", "eyJhbGciOiJub25lIn0.eyJpc3MiOjF9.".to_string()),
    ];
    for (what, jwt) in forged {
        let (status, body) = exchange(&env, &jwt, INSTALLATION_ID, json!({})).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(body["message"].is_string(), "{what}: {body}");
    }
    // A real JWT for an installation the App does not have.
    let (status, _) = exchange(&env, &good, 99, json!({})).await;
    assert_eq!(status, 404);
    // An installation token is not a JWT.
    let token = token["token"].as_str().unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/app/hook/deliveries", env.standin.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[tokio::test]
async fn a_token_works_only_for_its_repositories_until_it_expires_or_is_revoked() {
    let env = TestEnv::new().await;
    env.standin.set_knobs(github_standin::Knobs {
        installations: Some(
            [(
                INSTALLATION_ID,
                vec![
                    "octo-org/octo-repo".to_string(),
                    "octo-org/other".to_string(),
                ],
            )]
            .into(),
        ),
        ..Default::default()
    });
    let jwt = app_jwt();
    let jobs = "/repos/octo-org/octo-repo/actions/runs/1/jobs";
    // Scoped to one repository: that one answers, the installation's other one is not found.
    let (status, body) = exchange(
        &env,
        &jwt,
        INSTALLATION_ID,
        json!({"repositories": ["octo-repo"]}),
    )
    .await;
    assert_eq!(status, 201);
    let names: Vec<&str> = body["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["full_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["octo-org/octo-repo"]);
    let scoped = body["token"].as_str().unwrap().to_string();
    assert_eq!(get(&env, &scoped, jobs).await.0, 200);
    let (status, body) = get(&env, &scoped, "/repos/octo-org/other/actions/runs/1/jobs").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(get(&env, &scoped, "/repos/someone/else/pulls").await.0, 404);
    // A repository the installation does not have cannot be asked for.
    let (status, body) = exchange(
        &env,
        &jwt,
        INSTALLATION_ID,
        json!({"repositories": ["secret"]}),
    )
    .await;
    assert_eq!(status, 422, "{body}");

    // Unknown, missing and malformed credentials.
    assert_eq!(get(&env, "ghs_madeup", jobs).await.0, 401);
    let r = reqwest::Client::new()
        .get(format!("{}{jobs}", env.standin.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    // The App's JWT is not an installation token.
    assert_eq!(get(&env, &jwt, jobs).await.0, 401);

    // Revoked.
    env.standin.revoke_tokens();
    let (status, body) = get(&env, &scoped, jobs).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Bad credentials"))
    );

    // Expired: a token that lives one second.
    env.standin.set_knobs(github_standin::Knobs {
        token_ttl_secs: Some(1),
        ..Default::default()
    });
    let (_, body) = exchange(&env, &jwt, INSTALLATION_ID, json!({})).await;
    let short = body["token"].as_str().unwrap().to_string();
    assert_eq!(get(&env, &short, jobs).await.0, 200);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(get(&env, &short, jobs).await.0, 401);
}
