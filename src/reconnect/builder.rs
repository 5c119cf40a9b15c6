//! Configuring a [`ReconnectLayer`] and validating the configuration.

use std::sync::Arc;
use std::time::Duration;

use super::{BrokenConnection, ReconnectLayer};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::peers::{PeerHandle, PeerKey};

/// The largest stagger a builder accepts.
pub(crate) const MAX_STAGGER: Duration = Duration::from_secs(60);

/// Rejects a zero connect timeout, for the builder of `component`.
pub(crate) fn check_connect_timeout(
    component: &'static str,
    timeout: Duration,
) -> Result<(), ConfigError> {
    if timeout.is_zero() {
        return Err(ConfigError::new(
            component,
            "connect_timeout",
            ConfigErrorKind::Zero,
            "must be greater than zero, or every attempt would time out",
        ));
    }
    Ok(())
}

/// Rejects a stagger above [`MAX_STAGGER`], for the builder of `component`.
pub(crate) fn check_stagger(component: &'static str, stagger: Duration) -> Result<(), ConfigError> {
    if stagger > MAX_STAGGER {
        return Err(ConfigError::new(
            component,
            "stagger",
            ConfigErrorKind::TooLarge,
            format!(
                "{stagger:?} is above the limit of {MAX_STAGGER:?}: a stagger spreads reconnects \
                 over a moment, it is not a delay"
            ),
        ));
    }
    Ok(())
}

/// What every service made by one [`ReconnectLayer`] shares.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) connect_timeout: Duration,
    pub(crate) stable_after: Duration,
    pub(crate) fail_fast: Option<Duration>,
    pub(crate) exhausted_cooldown: Option<Duration>,
    pub(crate) stagger: Duration,
    pub(crate) broken: BrokenConnection,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(10),
            stable_after: Duration::from_secs(5),
            fail_fast: Some(Duration::from_secs(3)),
            exhausted_cooldown: None,
            stagger: Duration::from_millis(100),
            broken: BrokenConnection::default(),
        }
    }
}

/// Builds a [`ReconnectLayer`]; [`build`](ReconnectBuilder::build) checks every value.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`connect_timeout`](Self::connect_timeout) | 10 s | an attempt that takes longer fails |
/// | [`stable_after`](Self::stable_after) | 5 s | uptime that proves the peer without a response |
/// | [`fail_fast`](Self::fail_fast) | 3 s | unavailability after which calls fail at once |
/// | [`exhausted_cooldown`](Self::exhausted_cooldown) | none | when an exhausted peer is reset |
/// | [`stagger`](Self::stagger) | 100 ms | spread of followers after a probe succeeds |
/// | [`broken_connection`](Self::broken_connection) | [`is_connection_lost`](super::is_connection_lost) | which call errors end the connection |
///
/// The backoff schedule is the peer's, from the [`Peers`](crate::peers::Peers) table.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct ReconnectBuilder<T, K: PeerKey> {
    peer: PeerHandle<K>,
    target: T,
    settings: Settings,
}

impl<T, K: PeerKey> ReconnectBuilder<T, K> {
    pub(crate) fn new(peer: PeerHandle<K>, target: T) -> Self {
        Self {
            peer,
            target,
            settings: Settings::default(),
        }
    }

    /// How long one connect attempt may take. A timed-out attempt counts as a failure and the
    /// peer backs off. Must be greater than zero.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.settings.connect_timeout = timeout;
        self
    }

    /// How long a connection must stay up to prove the peer works when no response has proved
    /// it yet; proof resets the peer's backoff. A connection that closes sooner without a
    /// successful response is flapping and the backoff keeps growing. Zero takes every
    /// connection as proof.
    pub fn stable_after(mut self, uptime: Duration) -> Self {
        self.settings.stable_after = uptime;
        self
    }

    /// After this long without a connection the service turns ready and fails each call at
    /// once with [`Unavailable`](super::Unavailable), while reconnecting goes on. `None` keeps
    /// `poll_ready` pending until a connection is up, however long that takes.
    pub fn fail_fast(mut self, after: Option<Duration>) -> Self {
        self.settings.fail_fast = after;
        self
    }

    /// Resets an [`Exhausted`](super::Exhausted) peer this long after the service found it so,
    /// so that attempts start again. `None` (the default) waits for an explicit reset. Must not
    /// be zero.
    pub fn exhausted_cooldown(mut self, cooldown: Option<Duration>) -> Self {
        self.settings.exhausted_cooldown = cooldown;
        self
    }

    /// When another service's probe brings the peer back, this service waits a random delay in
    /// `[0, stagger)` before connecting, so that many services do not all connect in the same
    /// instant. Zero connects at once; at most one minute.
    pub fn stagger(mut self, stagger: Duration) -> Self {
        self.settings.stagger = stagger;
        self
    }

    /// Which call errors mean the connection is gone.
    pub fn broken_connection(mut self, classifier: BrokenConnection) -> Self {
        self.settings.broken = classifier;
        self
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<ReconnectLayer<T, K>, ConfigError> {
        let s = &self.settings;
        check_connect_timeout("reconnect", s.connect_timeout)?;
        if s.exhausted_cooldown.is_some_and(|c| c.is_zero()) {
            return Err(ConfigError::new(
                "reconnect",
                "exhausted_cooldown",
                ConfigErrorKind::Zero,
                "must be greater than zero; use `None` to wait for an explicit reset, or raise \
                 the backoff's `max_attempts` to keep trying",
            ));
        }
        check_stagger("reconnect", s.stagger)?;
        Ok(ReconnectLayer::from_parts(
            self.peer,
            self.target,
            Arc::new(self.settings),
        ))
    }
}
