//! Retention: what the gateway keeps, and for how long, so that disk follows the retention
//! periods and not the weeks it has run (DESIGN.md §3.9). A background task runs one pass
//! every quarter of the shortest period (between a second and ten minutes):
//!
//! - **Field offices** (`--retention-hours`, 7 days): events the office acknowledged more than
//!   the period ago are compacted away ([`crate::store::Store::compact`]). Nothing it has not
//!   acknowledged is ever removed, however old (DESIGN.md §3.5).
//! - **Bureaus** (`--bureau-retention-hours`, [`BUREAU_RETENTION`]): bureaus acknowledge nothing,
//!   so their responses are removed by age, once appended more than the period ago
//!   ([`crate::store::Store::expire`]). The default is 30 days: long enough to outlast any
//!   plausible outage of a bureau's link (a long holiday weekend, a maintenance window of
//!   days) with a wide margin, and a full monthly reporting cycle, while a response's use is
//!   counted in hours (a detainer asks the jail to hold the person for 48 hours, weekends and
//!   holidays excluded). A bureau that asks for an older cursor gets its stream from the first
//!   response kept; cursors and heads never change.
//! - **Receipts** (the same period as the bureaus' responses): a completed submission that is
//!   not an identification, accepted more than the period ago, is forgotten — its receipt and
//!   the digest a resend is compared by ([`crate::store::Store::expire_receipts`]) — so the
//!   store follows the bookings of the period, not every booking ever held. A receipt lasts
//!   as long as the responses it leads to: a bureau resends a booking within minutes or hours
//!   of a lost answer, and asks its status within days. A TCN sent again after that is a new
//!   submission. Identifications are kept (a detainer's review, a removal or a complaint
//!   names one by TCN, months later), and so is a pending submission, however old.
//! - **The disclosure audit** (`--audit-retention-days`, off by default): an audit is evidence
//!   (a complaint of a leak to a jurisdiction that does not receive results, CRCL's investigations, the quarterly review), so it is kept whole
//!   unless an operator asks otherwise. When asked, records older than the period are first
//!   written to an archive segment in `DATA/archive` and synced, and only then removed
//!   ([`crate::store::Store::archive_disclosures`]; the crash rules are
//!   [`crate::store::archive`]'s). The cut-off moves a day at a time (or by the period, if
//!   shorter), so the archive holds about one segment a day, not one a pass.
//!
//! Each step is bounded ([`crate::store::COMPACT_LIMIT`] events or records), so a pass never
//! holds the store's writer long; a backlog (a first pass over months of history) is worked
//! off in [`MAX_STEPS`] steps a pass, pass after pass.

use super::{Gateway, ServeOptions};
use crate::store::{Archived, COMPACT_LIMIT, DynStore, StoreResult};
use std::sync::Arc;
use std::time::Duration;

/// How long bureau responses are kept by default (see the module documentation).
pub const BUREAU_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most steps of each kind in one pass.
pub const MAX_STEPS: usize = 100;
const DAY_MS: i64 = 24 * 3600 * 1000;

/// What one pass removed.
#[derive(Debug, Default)]
pub struct Pass {
    pub office_events: u64,
    pub bureau_events: u64,
    pub receipts: u64,
    pub archived: Vec<Archived>,
}

/// The audit's cut-off at `now_ms`: records delivered before it are archived. `now - period`,
/// rounded down to a whole day (or to the period, if shorter); never before 1970.
pub fn audit_cutoff(now_ms: i64, period: Duration) -> i64 {
    let period_ms = ms(period);
    let cutoff = now_ms.saturating_sub(period_ms).max(0);
    match period_ms.min(DAY_MS) {
        0 => cutoff,
        step => cutoff.div_euclid(step) * step,
    }
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// Repeats `step` while it removes a full [`COMPACT_LIMIT`], at most [`MAX_STEPS`] times.
async fn steps<F, Fut>(mut step: F) -> StoreResult<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<u64>>,
{
    let mut removed = 0;
    for _ in 0..MAX_STEPS {
        let n = step().await?;
        removed += n;
        if n < COMPACT_LIMIT as u64 {
            break;
        }
        tokio::task::yield_now().await;
    }
    Ok(removed)
}

/// One retention pass at `now_ms` with `o`'s periods.
pub async fn pass(store: &DynStore, o: &ServeOptions, now_ms: i64) -> StoreResult<Pass> {
    let acked_before = now_ms.saturating_sub(ms(o.retention));
    let office_events = steps(|| store.compact(acked_before)).await?;
    let appended_before = now_ms.saturating_sub(ms(o.bureau_retention));
    let bureau_events = steps(|| store.expire(appended_before, now_ms)).await?;
    // A receipt lasts as long as the responses it leads to.
    let receipts = steps(|| store.expire_receipts(appended_before)).await?;
    let mut archived = Vec::new();
    if let Some(period) = o.audit_retention {
        let before = audit_cutoff(now_ms, period);
        for _ in 0..MAX_STEPS {
            match store.archive_disclosures(before).await? {
                Some(a) => archived.push(a),
                None => break,
            }
        }
    }
    Ok(Pass {
        office_events,
        bureau_events,
        receipts,
        archived,
    })
}

impl Gateway {
    /// Runs a retention [`pass`] every quarter of the shortest period (between a second and
    /// ten minutes), until shutdown.
    pub(super) fn start_retention(self: &Arc<Self>) {
        let o = self.options.clone();
        let shortest = [
            Some(o.retention),
            Some(o.bureau_retention),
            o.audit_retention,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(o.retention);
        let every = (shortest / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
        let store = self.core.store.clone();
        self.every(every, move || {
            let (store, o) = (store.clone(), o.clone());
            async move {
                match pass(&store, &o, crate::convert::now_ms()).await {
                    Ok(p) => {
                        if p.office_events + p.bureau_events + p.receipts > 0 {
                            tracing::info!(
                                office_events = p.office_events,
                                bureau_events = p.bureau_events,
                                receipts = p.receipts,
                                "retention removed events and forgot receipts"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "retention pass failed; will retry"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_cut_off_moves_a_day_at_a_time_or_by_a_shorter_period() {
        let day = Duration::from_secs(24 * 3600);
        let now = 10 * DAY_MS + 5 * 3600 * 1000;
        assert_eq!(audit_cutoff(now, 3 * day), 7 * DAY_MS);
        assert_eq!(audit_cutoff(now + 3600 * 1000, 3 * day), 7 * DAY_MS);
        assert_eq!(audit_cutoff(now, Duration::from_secs(60)), now - 60_000);
        assert_eq!(audit_cutoff(now + 1, Duration::from_secs(60)), now - 60_000);
        assert_eq!(audit_cutoff(now, Duration::ZERO), now);
        assert_eq!(audit_cutoff(now, Duration::MAX), 0);
    }
}
