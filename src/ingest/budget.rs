//! The memory budget of ingest: bytes of callback bodies being read, parsed or waiting for
//! their commit, across every connection. A body is charged as it arrives (its declared
//! length up front when it has one) and released when its answer is sent. Past the budget
//! a callback is answered 503 with Retry-After at once, so many large bodies in flight can
//! cost at most the budget, not `max_connections × max_body_bytes`.
//!
//! What is charged is the body itself. Its parsed form is built and dropped within one
//! synchronous step (parse, normalize, fan out) before the commit is awaited, so at most
//! one parsed payload per runtime worker exists at any moment; docs/reliability.md gives
//! the measured cost of a parsed payload per body byte.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct Budget {
    bytes: Arc<Semaphore>,
}

/// Bytes of the budget held by one request; given back on drop.
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

/// The budget has no room for this body now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted;

impl Budget {
    pub fn new(bytes: usize) -> Self {
        Self { bytes: Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))) }
    }

    pub fn hold(&self) -> Held {
        Held { permit: None, bytes: 0 }
    }

    /// Grows `held` to cover `total` bytes; never waits.
    pub fn grow(&self, held: &mut Held, total: usize) -> Result<(), Exhausted> {
        let Some(more) = total.checked_sub(held.bytes).filter(|&n| n > 0) else { return Ok(()) };
        let more32 = u32::try_from(more).map_err(|_| Exhausted)?;
        let permit = self.bytes.clone().try_acquire_many_owned(more32).map_err(|_| Exhausted)?;
        match &mut held.permit {
            Some(existing) => existing.merge(permit),
            None => held.permit = Some(permit),
        }
        held.bytes = total;
        Ok(())
    }

    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.bytes.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_share_the_budget_and_give_it_back() {
        let budget = Budget::new(100);
        let mut a = budget.hold();
        budget.grow(&mut a, 60).unwrap();
        budget.grow(&mut a, 40).unwrap(); // never shrinks while held
        let mut b = budget.hold();
        assert_eq!(budget.grow(&mut b, 50), Err(Exhausted));
        budget.grow(&mut b, 40).unwrap();
        assert_eq!(budget.available(), 0);
        drop(a);
        assert_eq!(budget.available(), 60);
        budget.grow(&mut b, 100).unwrap();
        drop(b);
        assert_eq!(budget.available(), 100);
    }
}
