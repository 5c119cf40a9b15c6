//! Waits with a bound, for real-socket tests: nothing a test awaits may hang it, and a wait
//! that runs out names what it waited for.
//!
//! Include it with `#[path = "support/bounded.rs"] mod bounded;`.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use tokio::time::{sleep, timeout};

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(5);

/// Awaits `future` for at most `limit`; past it the test fails, naming `what`.
pub async fn within<F: Future>(limit: Duration, what: &str, future: F) -> F::Output {
    match timeout(limit, future).await {
        Ok(output) => output,
        Err(_) => panic!("not within {limit:?}: {what}"),
    }
}

/// Looks at `check` every few milliseconds until it holds, for at most `limit`; past it the
/// test fails, naming `what`.
pub async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    within(limit, what, async {
        while !check() {
            sleep(POLL).await;
        }
    })
    .await;
}
