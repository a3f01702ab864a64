//! The Postgres pool and the schema migrations.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
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
    #[error("Postgres is unreachable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("Postgres error: {0}")]
    Query(#[from] tokio_postgres::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] refinery::Error),
}

pub fn pool(database_url: &str, max_size: usize) -> Result<Pool, DbError> {
    let pg: tokio_postgres::Config = database_url.parse().map_err(DbError::Url)?;
    let manager = Manager::from_config(
        pg,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(std::time::Duration::from_secs(5)))
        .create_timeout(Some(std::time::Duration::from_secs(3)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Build(e.to_string()))
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
            DbError::Migration(_) | DbError::Url(_) | DbError::Build(_) => false,
        }
    }
}
