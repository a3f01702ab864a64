//! Fix memory's lookup: the last fix of this failure's fingerprint that was validated and
//! merged (by selfheal's policy or a person), in the run's repository or, when the operator
//! allows it, any repository of its installation. Only an incident whose PR held one fix is
//! remembered: a PR that took several pushes merged their sum, which no one patch is. A fix
//! people reverted (GitHub's Revert button, `deliveries.reverted_at`) is forgotten: the team
//! said it was wrong. The engine decides what to do with it (`heal::memory`).

use selfheal_shared::config::FixMemory;
use selfheal_shared::runs::Run;
use uuid::Uuid;

use crate::heal::{Remembered, Strategy};

pub async fn remembered(
    client: &impl tokio_postgres::GenericClient,
    run: &Run,
    fingerprint: &str,
    scope: FixMemory,
) -> Result<Option<Remembered>, tokio_postgres::Error> {
    let any_repository = match scope {
        FixMemory::Off => return Ok(None),
        FixMemory::Repository => false,
        FixMemory::Installation => true,
    };
    let row = client
        .query_opt(
            "SELECT r.id, r.repository_full_name, p.strategy, p.diff
             FROM deliveries dl
             JOIN fix_attempts fa ON fa.incident_id = dl.incident_id AND fa.pushed_at IS NOT NULL
             JOIN runs r ON r.id = fa.run_id
             JOIN patches p ON p.run_id = r.id AND p.verdict = 'fixed'
             JOIN diagnoses d ON d.run_id = r.id
             WHERE dl.kind = 'pull_request' AND dl.merged_at IS NOT NULL AND dl.reverted_at IS NULL
               AND d.fingerprint = $1 AND r.installation_id = $2 AND r.id <> $3
               AND ($4 OR r.repository_full_name = $5)
               AND (SELECT count(*) FROM fix_attempts o
                    WHERE o.incident_id = dl.incident_id AND o.pushed_at IS NOT NULL) = 1
             ORDER BY dl.merged_at DESC LIMIT 1",
            &[
                &fingerprint,
                &run.installation_id,
                &run.id,
                &any_repository,
                &run.repository_full_name,
            ],
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
