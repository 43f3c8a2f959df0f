//! Per-identity rate of reads that disclose case data: `GetStatus`, `GetResponseHead`, and
//! opening a `StreamResponses` or `Subscribe` stream. Each such call writes to the disclosure
//! audit (or may), so without a bound one bureau's loop of status checks wrote audit rows as
//! fast as the store could commit them (issue 27). A token bucket per client identity: `rate`
//! calls a second on average, bursts of twice that; past it the call is refused with
//! RESOURCE_EXHAUSTED naming the limit and when to try again, before anything is read or
//! recorded. Submissions have their own bounds (the pipeline's), acknowledgements write
//! nothing the caller could repeat to effect, and admin calls are the operator's.

use crate::error::GatewayError;
use dashmap::DashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One identity's bucket.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The shared limiter. Cloning shares it.
#[derive(Clone)]
pub struct ReadRate {
    /// Calls a second; 0 = unlimited.
    rate: u32,
    buckets: Arc<DashMap<String, Bucket>>,
}

impl ReadRate {
    pub fn new(rate: u32) -> Self {
        ReadRate {
            rate,
            buckets: Arc::default(),
        }
    }

    /// Takes one read for `who` (a SPIFFE id) for the call `what`, or refuses it.
    pub fn admit(&self, who: &str, what: &str) -> Result<(), GatewayError> {
        self.admit_at(who, what, Instant::now())
    }

    fn admit_at(&self, who: &str, what: &str, now: Instant) -> Result<(), GatewayError> {
        if self.rate == 0 {
            return Ok(());
        }
        let rate = f64::from(self.rate);
        let burst = 2.0 * rate;
        let mut b = self.buckets.entry(who.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - b.tokens) / rate);
        Err(GatewayError::ResourceExhausted(format!(
            "{what}: read rate limit of {} calls a second (bursts of {}) for {who} reached \
             (--max-reads-per-identity); retry in {} ms",
            self.rate,
            self.rate * 2,
            wait.as_millis().max(1)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_and_each_identity_apart() {
        let r = ReadRate::new(10);
        let t0 = Instant::now();
        for i in 0..20 {
            r.admit_at("a", "GetStatus", t0)
                .unwrap_or_else(|e| panic!("{i}: {e}"));
        }
        let e = r.admit_at("a", "GetStatus", t0).unwrap_err().to_string();
        assert!(
            e.contains("10 calls a second") && e.contains("retry in 100 ms"),
            "{e}"
        );
        // Another identity has its own bucket.
        r.admit_at("b", "GetStatus", t0).unwrap();
        // A tenth of a second later, one more.
        let t1 = t0 + Duration::from_millis(100);
        r.admit_at("a", "GetStatus", t1).unwrap();
        assert!(r.admit_at("a", "GetStatus", t1).is_err());
        // Unlimited.
        let free = ReadRate::new(0);
        for _ in 0..10_000 {
            free.admit_at("a", "GetStatus", t0).unwrap();
        }
    }
}
