//! The append-only, hash-chained audit log. Rows are appended by the `audit_append` SQL
//! function in the caller's transaction, unlinked and without a lock; `audit_chain`
//! (migrations/V12) links committed rows to the chain later, in order, under the one lock, so
//! that ingest does not run one commit at a time.

use deadpool_postgres::GenericClient;
use serde_json::Value;

pub(crate) const APPEND: &str = "SELECT audit_append($1, $2, $3, $4)";

pub async fn append(
    client: &impl GenericClient,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &Value,
) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            &client.prepare_cached(APPEND).await?,
            &[&actor, &action, &subject, detail],
        )
        .await?;
    Ok(row.get(0))
}

/// Where the chain breaks, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainBreak {
    /// The row's content no longer matches its hash: it was edited.
    Edited { seq: i64 },
    /// The row does not link to the row before it: a row was deleted or inserted out of band.
    Unlinked { seq: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Rows checked: the linked ones. `seq` in a break or the head is a row's place in the
    /// chain (`chain_seq`).
    pub rows: u64,
    /// Rows committed but not linked yet when the check ran.
    pub unlinked: u64,
    pub breaks: Vec<ChainBreak>,
    /// The last row's sequence number and hash: the whole chain's fingerprint. Recorded
    /// somewhere the database's owner cannot write (a ticket, another system's log), it shows
    /// later that no row up to it was changed, and none cut off the end.
    pub head: Option<(i64, Vec<u8>)>,
}

impl AuditReport {
    pub fn is_intact(&self) -> bool {
        self.breaks.is_empty()
    }
}

/// Links up to `limit` (at most 10,000) committed rows to the chain; returns how many (0 when
/// another linker is at it).
pub async fn chain(client: &impl GenericClient, limit: i32) -> Result<i32, tokio_postgres::Error> {
    Ok(client
        .query_one("SELECT audit_chain($1)", &[&limit])
        .await?
        .get(0))
}

/// Rows one relay tick links in a batch, and batches at most per tick.
pub const LINK_BATCH: i32 = 1_000;
pub const LINK_BATCHES_PER_TICK: usize = 20;

/// The relay's linking, once a tick: batch after batch while they come back full, up to
/// `LINK_BATCHES_PER_TICK`. One batch a tick fell behind for good above about a thousand
/// audit rows a second (two per created run), so the chain's head lagged ever further behind
/// what was committed. Returns how many rows were linked.
pub async fn link_backlog(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    let mut linked = 0i64;
    for _ in 0..LINK_BATCHES_PER_TICK {
        let n = chain(client, LINK_BATCH).await?;
        linked += i64::from(n);
        if n < LINK_BATCH {
            break;
        }
    }
    Ok(linked)
}

/// Rows committed but not linked to the chain yet.
pub async fn unlinked(client: &impl GenericClient) -> Result<i64, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE chain_seq IS NULL",
            &[],
        )
        .await?
        .get(0))
}

/// Links the committed rows (in batches, while batches come back full: steady ingest does not
/// keep it going), then recomputes every linked row's hash and checks each link, in chain
/// order. Rows committed meanwhile, or left to a linker busy elsewhere, are counted unlinked.
pub async fn verify(client: &impl GenericClient) -> Result<AuditReport, tokio_postgres::Error> {
    const BATCH: i32 = 10_000;
    while chain(client, BATCH).await? == BATCH {}
    let unlinked = unlinked(client).await?;
    let rows = client
        .query(
            "SELECT chain_seq AS seq, prev_hash, hash,
                    audit_row_hash(prev_hash, chain_seq, at, actor, action, subject, detail) AS expected
             FROM audit_log WHERE chain_seq IS NOT NULL ORDER BY chain_seq",
            &[],
        )
        .await?;
    let mut breaks = Vec::new();
    let mut previous: Vec<u8> = Vec::new();
    for row in &rows {
        let seq: i64 = row.get("seq");
        // A linked row's link cannot be NULL unless someone with the owner's rights made it so.
        let prev_hash: Vec<u8> = row
            .get::<_, Option<Vec<u8>>>("prev_hash")
            .unwrap_or_default();
        let hash: Vec<u8> = row.get::<_, Option<Vec<u8>>>("hash").unwrap_or_default();
        let expected: Vec<u8> = row
            .get::<_, Option<Vec<u8>>>("expected")
            .unwrap_or_default();
        if hash != expected {
            breaks.push(ChainBreak::Edited { seq });
        }
        if prev_hash != previous {
            breaks.push(ChainBreak::Unlinked { seq });
        }
        previous = hash;
    }
    let head = rows.last().map(|r| (r.get("seq"), previous));
    Ok(AuditReport {
        rows: rows.len() as u64,
        unlinked: unlinked as u64,
        breaks,
        head,
    })
}
