//! Fix memory's lookup: the last fix of this failure's fingerprint in the run's installation
//! that was validated and merged (by selfheal's policy or a person), in any of its
//! repositories. The engine decides what to do with it (`heal::memory`).

use deadpool_postgres::Client;
use selfheal_shared::runs::Run;
use uuid::Uuid;

use crate::heal::{Remembered, Strategy};

pub async fn remembered(
    client: &Client,
    run: &Run,
    fingerprint: &str,
) -> Result<Option<Remembered>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT r.id, r.repository_full_name, p.strategy, p.diff
             FROM diagnoses d
             JOIN runs r ON r.id = d.run_id
             JOIN patches p ON p.run_id = r.id AND p.verdict = 'fixed'
             JOIN deliveries dl ON dl.run_id = r.id AND dl.kind = 'pull_request'
             WHERE d.fingerprint = $1 AND r.installation_id = $2 AND r.id <> $3
               AND dl.merged_at IS NOT NULL
             ORDER BY dl.merged_at DESC LIMIT 1",
            &[&fingerprint, &run.installation_id, &run.id],
        )
        .await?;
    Ok(row.and_then(|row| {
        let id: Uuid = row.get(0);
        // A strategy this worker does not know (a newer one's row) is no memory.
        Some(Remembered {
            run_id: id.to_string(),
            repository: row.get(1),
            strategy: Strategy::parse(row.get(2))?,
            patch: row.get(3),
        })
    }))
}
