//! TLS to Postgres and Redis, against a real Postgres that refuses anything but TLS
//! (`hostssl` only) and a real Redis serving only TLS, both with a certificate from a CA of
//! the test's own, trusted through `SSL_CERT_FILE` as on a host with a private CA.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::own_services::{free_port, OwnPostgres};

/// A CA, and a certificate it signs for 127.0.0.1 (PEM files in `dir`): (ca, cert, key).
fn certificates(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let at = |f: &str| dir.join(format!("{name}-{f}"));
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl").args(args).output().unwrap();
        assert!(ok.status.success(), "openssl {args:?}: {ok:?}");
    };
    let p = |b: PathBuf| b.display().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p(at("ca.key")),
        "-out",
        &p(at("ca.crt")),
        "-subj",
        "/CN=selfheal test CA",
        "-days",
        "2",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p(at("server.key")),
        "-out",
        &p(at("server.csr")),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(at("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(at("server.csr")),
        "-CA",
        &p(at("ca.crt")),
        "-CAkey",
        &p(at("ca.key")),
        "-CAcreateserial",
        "-out",
        &p(at("server.crt")),
        "-days",
        "2",
        "-extfile",
        &p(at("san.ext")),
    ]);
    (at("ca.crt"), at("server.crt"), at("server.key"))
}

async fn ssl_in_use(url: &str) -> Result<bool, String> {
    let pool = selfheal_shared::db::pool(url, 1).map_err(|e| e.to_string())?;
    let client = pool.get().await.map_err(|e| format!("{e:?}"))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn postgres_over_tls_with_sslmode_require_and_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path(), "pg");
    let (other_ca, _, _) = certificates(dir.path(), "other");
    let pg = OwnPostgres::start_tls(dir.path(), &cert, &key);
    let url = |mode: &str| format!("postgres://postgres@127.0.0.1:{}/postgres{mode}", pg.port);
    // nextest runs this test in a process of its own: the variable is its alone.
    std::env::set_var("SSL_CERT_FILE", &ca);
    assert_eq!(ssl_in_use(&url("?sslmode=require")).await, Ok(true));
    // The server takes nothing but TLS: without sslmode=require selfheal connects in plain,
    // and is refused.
    let plain = ssl_in_use(&url("")).await.unwrap_err();
    assert!(
        plain.contains("no pg_hba.conf entry") || plain.contains("SSL off"),
        "{plain}"
    );
    // A certificate from a CA the host does not trust is refused: TLS here verifies.
    std::env::set_var("SSL_CERT_FILE", &other_ca);
    let untrusted = ssl_in_use(&url("?sslmode=require")).await.unwrap_err();
    assert!(
        untrusted.to_lowercase().contains("certificate"),
        "{untrusted}"
    );
    // And the name: the certificate is for 127.0.0.1, not localhost.
    std::env::set_var("SSL_CERT_FILE", &ca);
    let renamed = format!(
        "postgres://postgres@localhost:{}/postgres?sslmode=require",
        pg.port
    );
    let wrong_name = ssl_in_use(&renamed).await.unwrap_err();
    assert!(
        wrong_name.to_lowercase().contains("certificate"),
        "{wrong_name}"
    );
    // Migrations, the worker's stage locks and every pool go the same way.
    let pool = selfheal_shared::db::pool(&url("?sslmode=require"), 2).unwrap();
    selfheal_shared::db::migrate(&pool).await.unwrap();
    let (session, _connection) = selfheal_shared::db::connect(&url("?sslmode=require"))
        .await
        .unwrap();
    let row = session
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
}

#[tokio::test]
async fn redis_over_tls_with_rediss_and_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(dir.path(), "redis");
    let port = free_port();
    let mut server = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--tls-cert-file")
        .arg(&cert)
        .arg("--tls-key-file")
        .arg(&key)
        .arg("--tls-ca-cert-file")
        .arg(&ca)
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::env::set_var("SSL_CERT_FILE", &ca);
    let config =
        selfheal_shared::queue::storage_config("tls-test", std::time::Duration::from_secs(5), 3);
    let queue = selfheal_shared::queue::JobQueue::new(
        &format!("rediss://127.0.0.1:{port}"),
        config.clone(),
    );
    queue.ping().await.unwrap();
    queue
        .push(selfheal_shared::job::CommandJob { command_id: 7 })
        .await
        .unwrap();
    // A CA the host does not trust, or a name the certificate does not carry, is refused.
    let (other_ca, _, _) = certificates(dir.path(), "other");
    std::env::set_var("SSL_CERT_FILE", &other_ca);
    let untrusted = format!("rediss://127.0.0.1:{port}");
    let untrusted = selfheal_shared::queue::JobQueue::new(&untrusted, config.clone());
    assert!(untrusted.ping().await.is_err());
    std::env::set_var("SSL_CERT_FILE", &ca);
    let renamed = format!("rediss://localhost:{port}");
    let renamed = selfheal_shared::queue::JobQueue::new(&renamed, config.clone());
    assert!(renamed.ping().await.is_err());
    // Plain Redis protocol to a TLS port gets nowhere.
    let plain = selfheal_shared::queue::JobQueue::new(&format!("redis://127.0.0.1:{port}"), config);
    assert!(plain.ping().await.is_err());
    server.kill().unwrap();
    server.wait().unwrap();
}
