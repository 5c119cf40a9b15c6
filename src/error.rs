//! Errors shared by every part of redial.

use std::fmt;

/// A configuration value was rejected when building a redial component.
///
/// Builders validate every field before anything runs, so a bad value (a NaN multiplier, a zero
/// maximum delay, a capacity of zero) surfaces here, at construction, instead of as a panic or a
/// silent busy loop at run time. The message names the field, says what is wrong with it and
/// what a valid value looks like.
///
/// ```
/// use std::time::Duration;
/// use redial::backoff::Backoff;
///
/// let err = Backoff::builder().multiplier(f64::NAN).build().unwrap_err();
/// assert_eq!(err.field(), "multiplier");
/// assert!(err.to_string().contains("NaN"));
/// # let _ = Duration::ZERO;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    component: &'static str,
    field: &'static str,
    kind: ConfigErrorKind,
    detail: String,
}

/// Which rule a rejected configuration value broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The value is NaN or infinite.
    NotFinite,
    /// The value is zero where zero makes no sense (a zero maximum, a zero capacity).
    Zero,
    /// The value is below the smallest allowed value.
    TooSmall,
    /// The value is above the largest allowed value.
    TooLarge,
    /// The value contradicts another field (e.g. `initial` above `max`).
    Inconsistent,
}

impl ConfigErrorKind {
    /// Which side of its range a finite value found outside the range is on, given the range's
    /// lower end (a value at the lower end is outside only when that end is open).
    pub(crate) fn outside(value: f64, lower: f64) -> Self {
        if value <= lower {
            ConfigErrorKind::TooSmall
        } else {
            ConfigErrorKind::TooLarge
        }
    }
}

impl ConfigError {
    pub(crate) fn new(
        component: &'static str,
        field: &'static str,
        kind: ConfigErrorKind,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            component,
            field,
            kind,
            detail: detail.into(),
        }
    }

    /// The component whose builder rejected the value, e.g. `"backoff"` or `"peers"`.
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// The name of the rejected field, as spelled by the builder method that sets it.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Which rule the value broke.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} `{}`: {}",
            self.component, self.field, self.detail
        )
    }
}

impl std::error::Error for ConfigError {}

/// A new peer could not be tracked because [`Peers`](crate::peers::Peers) is at capacity and no
/// idle discovered peer could be evicted to make room.
///
/// Raise the capacity with [`PeersBuilder::capacity`](crate::peers::PeersBuilder::capacity), drop
/// [`PeerHandle`](crate::peers::PeerHandle)s of peers you no longer use so they become evictable,
/// or [`forget`](crate::peers::Peers::forget) peers that went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityError {
    pub(crate) capacity: usize,
}

impl CapacityError {
    /// The configured capacity that was reached.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "peer table is full ({} peers) and no idle discovered peer can be evicted; \
             raise the capacity or forget peers that went away",
            self.capacity
        )
    }
}

impl std::error::Error for CapacityError {}

/// Shows an error with its `source()` chain, `outer: inner: root`, so that what the tracker
/// keeps says why (hyper's "client error (Connect)" alone does not). A source whose text the
/// previous one already contains is skipped.
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut previous = self.0.to_string();
        let mut next = self.0.source();
        while let Some(source) = next {
            let text = source.to_string();
            if !previous.contains(&text) {
                write!(f, ": {text}")?;
            }
            previous = text;
            next = source.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error (Connect)")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_chain_shows_every_source_once() {
        let error = Outer(std::io::Error::other("connection refused"));
        assert_eq!(
            Chain(&error).to_string(),
            "client error (Connect): connection refused"
        );
        let plain = std::io::Error::other("refused");
        assert_eq!(Chain(&plain).to_string(), "refused");
    }
}
