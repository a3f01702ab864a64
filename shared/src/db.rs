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
