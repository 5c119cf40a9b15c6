//! Scenarios 2 and 5 of issue #6 need the health layer (issue #5: `HealthLayer`, active
//! checks, the p2c `Discover` adapter, the fail-fast wrapper for no healthy peers), which is
//! being written beside this suite. They are described here so that they slot in as two more
//! sweeps in `tests/sim.rs`, with the same harness:
//!
//! TODO(lead, once #5 lands): scenario 2, a black hole in one of three peers. Three server
//! hosts behind timeout → retry → balance (health `Discover`) → `HealthLayer` → reconnect →
//! `harness::net::Connector`. At some instant, `Fault::Partition(client, "server-b")` after its
//! connections are up, and `Fault::Hold(client, "server-b")` for a connect that hangs. Assert:
//! the peer is ejected within `attempt timeout × consecutive failures`; afterwards only probes
//! reach it (count at `server-b`'s `Counters`); success ≥ 99 %. This is the scenario that
//! produces `ejected`, `restored` and the `Ejected` state, so when it lands remove them from
//! `PENDING_HEALTH` in `tests/sim.rs`.
//!
//! TODO(lead, once #5 lands): scenario 5, a slow peer. `Fault::Latency(client, "server-c",
//! 500 ms)` on one of three peers: it is ejected; the p99 of the stack stays under the
//! per-request timeout; after `Fault::Latency(client, "server-c", 5 ms)` it is re-admitted
//! (a `restored` event, requests reach it again). Run one peer forced closed
//! (`Override::Closed`) so that `ejection_skipped` is reached too.
