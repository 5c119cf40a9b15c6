//! Configuring a [`ConnectLayer`] and validating the configuration.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::{ConnectLayer, Tracked};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::peers::{PeerKey, Peers};
use crate::reconnect::builder::{check_connect_timeout, check_stagger};

/// What every call of one connector shares.
#[derive(Debug, Clone)]
pub(crate) struct ConnectSettings {
    pub(crate) connect_timeout: Duration,
    pub(crate) attempts_per_call: u32,
    pub(crate) call_deadline: Option<Duration>,
    pub(crate) stable_after: Duration,
    pub(crate) stagger: Duration,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            attempts_per_call: 3,
            call_deadline: Some(Duration::from_secs(30)),
            stable_after: Duration::from_secs(5),
            stagger: Duration::from_millis(100),
        }
    }
}

/// Builds a [`ConnectLayer`]; [`build`](ConnectBuilder::build) checks every value.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`connect_timeout`](Self::connect_timeout) | 10 s | an attempt that takes longer fails |
/// | [`attempts_per_call`](Self::attempts_per_call) | 3 | connect attempts one call may make itself |
/// | [`call_deadline`](Self::call_deadline) | 30 s | how long one call may wait and retry in all |
/// | [`stable_after`](Self::stable_after) | 5 s | uptime that proves the peer without an answer |
/// | [`stagger`](Self::stagger) | 100 ms | spread of waiting calls after a probe succeeds |
///
/// The backoff schedule is the peer's, from the [`Peers`] table.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ConnectBuilder<KF, K: PeerKey> {
    peers: Peers<K>,
    keys: KF,
    settings: ConnectSettings,
}

impl<KF, K: PeerKey> ConnectBuilder<KF, K> {
    pub(crate) fn new(peers: Peers<K>, keys: KF) -> Self {
        Self {
            peers,
            keys,
            settings: ConnectSettings::default(),
        }
    }

    /// How long one connect attempt may take; a timed-out attempt counts as a failure. Must be
    /// greater than zero.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// How many connect attempts one call may make itself before it returns the last connect
    /// error to the client. Must be at least 1.
    pub fn attempts_per_call(mut self, attempts: u32) -> Self {
        self.settings.attempts_per_call = attempts;
        self
    }

    /// How long one call may take in all, waiting for the peer's backoff or for another call's
    /// attempt included; then the call fails with [`Unavailable`](crate::reconnect::Unavailable).
    /// A call that would have to wait for a backoff ending past it fails at once. An attempt
    /// that the deadline cuts short is cancelled, not counted against the peer: it did not get
    /// the whole connect timeout. Must be at least `connect_timeout`. `None` lets a call wait
    /// for its turn at the gate as long as that takes.
    pub fn call_deadline(mut self, deadline: Option<Duration>) -> Self {
        self.settings.call_deadline = deadline;
        self
    }

    /// How long a connection must stay up to prove the peer works when it has not received a
    /// byte yet. Zero takes every connection as proof.
    pub fn stable_after(mut self, uptime: Duration) -> Self {
        self.settings.stable_after = uptime;
        self
    }

    /// When another call's attempt brings the peer back, a waiting call waits a random delay
    /// in `[0, stagger)` before connecting. Zero connects at once; at most one minute.
    pub fn stagger(mut self, stagger: Duration) -> Self {
        self.settings.stagger = stagger;
        self
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<ConnectLayer<KF, K, Tracked>, ConfigError> {
        let s = &self.settings;
        check_connect_timeout("connector", s.connect_timeout)?;
        if s.attempts_per_call == 0 {
            return Err(ConfigError::new(
                "connector",
                "attempts_per_call",
                ConfigErrorKind::Zero,
                "must be at least 1: a call must be allowed to try once",
            ));
        }
        if s.call_deadline.is_some_and(|d| d < s.connect_timeout) {
            return Err(ConfigError::new(
                "connector",
                "call_deadline",
                ConfigErrorKind::Inconsistent,
                "must be at least `connect_timeout`, so that a call can wait out one whole \
                 attempt; use `None` for no deadline",
            ));
        }
        check_stagger("connector", s.stagger)?;
        Ok(ConnectLayer {
            peers: self.peers,
            keys: self.keys,
            settings: Arc::new(self.settings),
            handoff: PhantomData,
        })
    }
}
