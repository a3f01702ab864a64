//! The Postgres pool and the schema migrations.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::SslMode;
use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is not a valid Postgres URL: {0}")]
    Url(tokio_postgres::Error),
    #[error("cannot build the Postgres pool: {0}")]
    Build(String),
    #[error("DATABASE_URL asks for TLS (sslmode=require), and no trusted certificate authority was found: {0}")]
    Trust(String),
    #[error("Postgres is unreachable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("Postgres error: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
}

/// How connections to `pg` are made: TLS when the URL says `sslmode=require`, verifying the
/// server's certificate and name against the system's trust store (`SSL_CERT_FILE` or
/// `SSL_CERT_DIR` name a private CA), as libpq's `verify-full` does. Otherwise plain, as with
/// libpq's default `prefer` against a server without TLS (docs/operations.md, "TLS").
pub fn tls_for(
    pg: &tokio_postgres::Config,
) -> Result<Option<tokio_postgres_rustls::MakeRustlsConnect>, DbError> {
    if pg.get_ssl_mode() != SslMode::Require {
        return Ok(None);
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or("the trust store is empty".to_string(), |e| e.to_string());
        return Err(DbError::Trust(why));
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| DbError::Trust(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Some(tokio_postgres_rustls::MakeRustlsConnect::new(config)))
}

pub fn pool(database_url: &str, max_size: usize) -> Result<Pool, DbError> {
    let pg: tokio_postgres::Config = database_url.parse().map_err(DbError::Url)?;
    pool_of(pg, max_size)
}

/// A pool whose sessions give up on a lock after `lock` and on a statement after
/// `statement` (Postgres's `lock_timeout` and `statement_timeout`, set when each connection
/// starts, after whatever options the URL gives): for writers that many requests wait on,
/// which must answer with an error rather than wait for a session that never commits.
pub fn pool_with_timeouts(
    database_url: &str,
    max_size: usize,
    lock: std::time::Duration,
    statement: std::time::Duration,
) -> Result<Pool, DbError> {
    let mut pg: tokio_postgres::Config = database_url.parse().map_err(DbError::Url)?;
    let options = format!(
        "{} -c lock_timeout={} -c statement_timeout={}",
        pg.get_options().unwrap_or_default(),
        lock.as_millis(),
        statement.as_millis()
    );
    pg.options(options.trim_start());
    pool_of(pg, max_size)
}

fn pool_of(pg: tokio_postgres::Config, max_size: usize) -> Result<Pool, DbError> {
    let config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls_for(&pg)? {
        Some(tls) => Manager::from_config(pg, tls, config),
        None => Manager::from_config(pg, NoTls, config),
    };
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(3)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Build(e.to_string()))
}

/// One connection outside the pool (a session that holds an advisory lock), made as the
/// pool's are; its connection task is spawned.
pub async fn connect(
    database_url: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ),
    DbError,
> {
    let pg: tokio_postgres::Config = database_url.parse().map_err(DbError::Url)?;
    Ok(match tls_for(&pg)? {
        Some(tls) => {
            let (client, connection) = pg.connect(tls).await?;
            (client, tokio::spawn(connection))
        }
        None => {
            let (client, connection) = pg.connect(NoTls).await?;
            (client, tokio::spawn(connection))
        }
    })
}

/// Applies pending migrations. Several replicas start at once, so they take turns on an
/// advisory lock rather than racing on the schema history table.
pub async fn migrate(pool: &Pool) -> Result<usize, DbError> {
    let mut client = pool.get().await?;
    client
        .execute("SELECT pg_advisory_lock(7261836372)", &[])
        .await?;
    let result = embedded::migrations::runner()
        .run_async(&mut **client)
        .await
        .map(|report| report.applied_migrations().len());
    client
        .execute("SELECT pg_advisory_unlock(7261836372)", &[])
        .await?;
    Ok(result?)
}

/// Whether `e` says Postgres went away or cannot be reached (a wait can cure it), rather than
/// that a statement was wrong: the socket closed or refused, the server shutting down or
/// restarting (57P01-57P03), or a connection exception (class 08). A bad URL or a failed
/// migration is not an outage.
pub fn is_outage(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        return code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03");
    }
    // No SQLSTATE: the failure was the connection's own (an I/O error on the socket).
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// The pool's view of an outage: a connection it could not open in time or whose server went
/// away. A pool whose connections are all busy (a wait timeout) is not an outage: the
/// database answers, this process is just saturated.
pub fn is_pool_outage(e: &deadpool_postgres::PoolError) -> bool {
    use deadpool_postgres::{PoolError, TimeoutType};
    match e {
        PoolError::Backend(e) => is_outage(e),
        PoolError::Timeout(TimeoutType::Create | TimeoutType::Recycle) => true,
        _ => false,
    }
}

impl DbError {
    /// Whether waiting for Postgres could cure this (see [`is_outage`]).
    pub fn is_outage(&self) -> bool {
        match self {
            DbError::Pool(e) => is_pool_outage(e),
            DbError::Query(e) => is_outage(e),
            DbError::Migration(_) | DbError::Url(_) | DbError::Build(_) | DbError::Trust(_) => {
                false
            }
        }
    }
}

/// Whether Postgres refused what a stored payload holds, though it parsed as JSON: a `\u0000`
/// in a string, a lone surrogate, a number beyond numeric's range, nesting too deep. The
/// sender's fault, and sending it again would fail the same way.
pub fn payload_refused(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    const REFUSED: [SqlState; 6] = [
        SqlState::INVALID_TEXT_REPRESENTATION,
        SqlState::INVALID_JSON_TEXT,
        SqlState::UNTRANSLATABLE_CHARACTER,
        SqlState::CHARACTER_NOT_IN_REPERTOIRE,
        SqlState::STATEMENT_TOO_COMPLEX,
        SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
    ];
    e.as_db_error()
        .is_some_and(|db| REFUSED.contains(db.code()))
}
