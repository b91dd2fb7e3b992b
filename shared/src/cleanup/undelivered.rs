//! Messages the stream gave up on. The stream retries a failing message for at most an hour
//! (five tries, then the batch's description, not the message, goes to the dead-letter
//! queue); an item still on the outbox's unsent queue a quarter of an hour after its last
//! try is delivered from here, through the same delivery record, so it still goes out at
//! most once. One the outbox is about to forget (its TTL) is given up on loudly.

use super::CleanupServices;
use super::drain::Due;
use crate::{
    notify::delivery,
    outbox::{self, OutboxItem},
    store::StoreError,
    time,
};

/// How long after its last try an unsent message is the cleanup's to deliver.
pub const AFTER: time::Duration = time::Duration::minutes(15);

/// What a pass over the unsent queue did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Redelivered {
    /// Delivered now (or found delivered, and taken off the queue).
    pub delivered: u32,
    /// Failed again; back of the queue for the next run.
    pub failed: u32,
    /// Too old to keep trying: left to expire, and logged as an error.
    pub abandoned: u32,
    pub stopped_early: bool,
}

/// Delivers what is due on the unsent queue, until done or `out_of_time`.
pub async fn redeliver(app: &dyn CleanupServices, out_of_time: impl Fn() -> bool) -> Redelivered {
    let mut done = Redelivered::default();
    let table = app.table();
    let cutoff = time::rfc3339(time::now() - AFTER);
    let give_up_before = time::rfc3339(time::now() - time::Duration::days(outbox::KEEP_DAYS - 1));
    for queue in outbox::unsent_queues() {
        // A failed item moves to the back (its last try is now), past the cutoff.
        let mut due = Due::new(|limit| table.queue_due(&queue, &cutoff, limit));
        while let Some(next) = due.next().await {
            if out_of_time() {
                done.stopped_early = true;
                return done;
            }
            let pk = match next {
                Ok(pk) => pk,
                Err(error) => {
                    tracing::error!(%error, queue, "cannot list unsent messages");
                    done.failed += 1;
                    break;
                }
            };
            match redeliver_one(app, &pk, &give_up_before).await {
                Ok(Outcome::Delivered) => done.delivered += 1,
                Ok(Outcome::Abandoned) => done.abandoned += 1,
                Ok(Outcome::Gone) => {}
                Err(error) => {
                    tracing::warn!(%error, outbox = %pk, "unsent message failed again; the next run retries");
                    if let Err(error) = OutboxItem::tried(table, &pk).await {
                        tracing::warn!(%error, outbox = %pk, "unsent message not moved back");
                    }
                    done.failed += 1;
                }
            }
        }
    }
    done
}

enum Outcome {
    Delivered,
    Abandoned,
    Gone,
}

async fn redeliver_one(app: &dyn CleanupServices, pk: &str, give_up_before: &str) -> Result<Outcome, String> {
    let table = app.table();
    let item = match table.get::<OutboxItem>(pk, outbox::SK).await {
        Ok(Some(item)) => item,
        Ok(None) => return Ok(Outcome::Gone),
        Err(StoreError::Serde(error)) => {
            // A message this code cannot read (an old shape) never will be.
            tracing::error!(%error, outbox = %pk, "unreadable unsent message abandoned");
            OutboxItem::settle(table, pk).await.map_err(|e| e.to_string())?;
            return Ok(Outcome::Abandoned);
        }
        Err(other) => return Err(other.to_string()),
    };
    if item.created_at.as_str() < give_up_before {
        tracing::error!(outbox = %pk, channel = item.message.channel(), created_at = %item.created_at,
            "message undelivered for days; abandoned");
        OutboxItem::settle(table, pk).await.map_err(|e| e.to_string())?;
        return Ok(Outcome::Abandoned);
    }
    delivery::deliver(app, &item).await.map_err(|e| e.to_string())?;
    Ok(Outcome::Delivered)
}
