//! [`HealthDiscoverBuilder`]: configuring a [`HealthDiscover`] and validating the configuration.

use std::time::Duration;

use super::discover::HealthDiscover;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::peers::{PeerHandle, PeerKey, Peers};

/// What a discover's behaviour depends on, besides its peers.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) exhausted_cooldown: Option<Duration>,
    pub(super) recheck: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            exhausted_cooldown: Some(Duration::from_secs(30)),
            recheck: Duration::from_secs(1),
        }
    }
}

/// Configures a [`HealthDiscover`]; [`build`](Self::build) checks every value.
///
/// | setting | default | meaning |
/// |---|---|---|
/// | [`exhausted_cooldown`](Self::exhausted_cooldown) | 30 s | an exhausted peer is reset and inserted again this long after it ran out of attempts |
/// | [`recheck`](Self::recheck) | 1 s | how often a peer out for no known time is looked at besides the health watch; the pause before a service the balancer dropped is replaced |
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct HealthDiscoverBuilder<K> {
    peers: Peers<K>,
    settings: Settings,
}

impl<K: PeerKey> HealthDiscoverBuilder<K> {
    /// Starts from the defaults, for peers of `peers`.
    pub fn new(peers: &Peers<K>) -> Self {
        Self {
            peers: peers.clone(),
            settings: Settings::default(),
        }
    }

    /// How long after a peer's attempts ran out the discover resets it (through
    /// [`PeerHandle::reset`], for every service of the peer) and inserts it again. `None`
    /// leaves an exhausted peer out until someone else resets it. Must not be zero.
    pub fn exhausted_cooldown(mut self, cooldown: Option<Duration>) -> Self {
        self.settings.exhausted_cooldown = cooldown;
        self
    }

    /// How often a peer that is out for no known time is looked at again, besides the health
    /// watch; also the pause before a service the balancer dropped on its own is replaced.
    /// Must be greater than zero.
    pub fn recheck(mut self, every: Duration) -> Self {
        self.settings.recheck = every;
        self
    }

    /// Checks the settings and makes the discover over `handles`, making each peer's service
    /// with `make`.
    pub fn build<S, F>(
        self,
        handles: impl IntoIterator<Item = PeerHandle<K>>,
        make: F,
    ) -> Result<HealthDiscover<K, S, F>, ConfigError>
    where
        F: FnMut(&PeerHandle<K>) -> S,
    {
        if self.settings.exhausted_cooldown == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                "health discover",
                "exhausted_cooldown",
                ConfigErrorKind::Zero,
                "must be greater than zero, or an exhausted peer would be reset at once; \
                 use `None` to leave resets to someone else",
            ));
        }
        if self.settings.recheck.is_zero() {
            return Err(ConfigError::new(
                "health discover",
                "recheck",
                ConfigErrorKind::Zero,
                "must be greater than zero, or the discover would look at its peers in a loop",
            ));
        }
        Ok(HealthDiscover::from_settings(
            &self.peers,
            handles,
            make,
            self.settings,
        ))
    }
}

impl<K: PeerKey> HealthDiscover<K, (), fn(&PeerHandle<K>)> {
    /// Configures a discover over peers of `peers`.
    pub fn builder(peers: &Peers<K>) -> HealthDiscoverBuilder<K> {
        HealthDiscoverBuilder::new(peers)
    }
}
