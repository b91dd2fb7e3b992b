//! How long this invocation may still run. Lambda tells each invocation its deadline
//! (`lambda_runtime::Context::deadline`, epoch milliseconds); work that calls out (Stripe)
//! budgets against it so the final state write always has time to run.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time kept back for the writes that follow an external call.
pub const WRITE_RESERVE: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadline {
    /// Epoch milliseconds; `None` when the caller set no deadline (a test or a tool).
    at_epoch_ms: Option<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or_default()
}

impl Deadline {
    /// No deadline: only the configured timeouts bound the work.
    pub fn none() -> Self {
        Self { at_epoch_ms: None }
    }

    /// From Lambda's context. A deadline that no Lambda invocation could have (zero when
    /// no runtime is behind the request, or further than the 15-minute maximum timeout from
    /// now, as the constant `600000` that `cargo lambda watch` sends) is none.
    pub fn from_epoch_ms(deadline: u64) -> Self {
        let now = now_ms();
        let plausible = deadline > now.saturating_sub(PLAUSIBLE_MS) && deadline < now + PLAUSIBLE_MS;
        if deadline != 0 && !plausible {
            tracing::debug!(deadline, "implausible invocation deadline ignored");
        }
        Self { at_epoch_ms: plausible.then_some(deadline) }
    }

    /// `duration` from now.
    pub fn after(duration: Duration) -> Self {
        Self { at_epoch_ms: Some(now_ms() + duration.as_millis() as u64) }
    }

    /// What is left, or `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.at_epoch_ms.map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
    }

    /// How long an external call that must leave [`WRITE_RESERVE`] behind may take, capped at
    /// `wanted`; `None` when not even a short call fits.
    pub fn budget_for(&self, wanted: Duration) -> Option<Duration> {
        match self.remaining() {
            None => Some(wanted),
            Some(left) => {
                let usable = left.checked_sub(WRITE_RESERVE)?;
                (usable >= MIN_CALL).then(|| usable.min(wanted))
            }
        }
    }
}

/// Lambda's longest timeout (15 minutes) plus a minute of clock slack.
const PLAUSIBLE_MS: u64 = 16 * 60 * 1000;

/// Below this a Stripe call is not worth starting.
const MIN_CALL: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_deadline_the_wanted_time_is_granted() {
        assert_eq!(Deadline::none().budget_for(Duration::from_secs(10)), Some(Duration::from_secs(10)));
        assert_eq!(Deadline::from_epoch_ms(0), Deadline::none());
        assert_eq!(Deadline::from_epoch_ms(600_000), Deadline::none(), "cargo lambda watch's constant");
        assert_eq!(Deadline::from_epoch_ms(now_ms() + 3_600_000), Deadline::none());
    }

    #[test]
    fn a_near_deadline_shrinks_or_refuses_the_call() {
        let soon = Deadline::after(Duration::from_millis(3000));
        let budget = soon.budget_for(Duration::from_secs(10)).unwrap();
        assert!(budget <= Duration::from_millis(1500) && budget > Duration::from_millis(1000), "{budget:?}");
        assert_eq!(Deadline::after(Duration::from_millis(1800)).budget_for(Duration::from_secs(10)), None);
        assert_eq!(Deadline::from_epoch_ms(now_ms() - 1000).budget_for(Duration::from_secs(1)), None, "past");
    }
}
