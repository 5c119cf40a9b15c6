//! [`RetryLayer`]: wraps a service so that failed requests are tried again.

use std::fmt;
use std::sync::Arc;

use tower::Layer;

use super::builder::{Config, RetryBuilder};
use super::classify::DefaultClassifier;
use super::service::Retry;
use super::track::NoPeer;

/// Wraps a service into a [`Retry`] service. Every service the layer makes, and every clone of
/// them, shares one retry [`Budget`](super::Budget).
///
/// See the [module documentation](super) for an example.
pub struct RetryLayer<P = DefaultClassifier, T = NoPeer> {
    config: Arc<Config<P, T>>,
}

impl RetryLayer {
    /// A layer with the defaults of [`RetryBuilder`]: the [`DefaultClassifier`], 3 attempts,
    /// 5 transparent retries, the default budget, nothing recorded but traces.
    pub fn new() -> Self {
        Self::default()
    }

    /// Configures a layer.
    pub fn builder() -> RetryBuilder {
        RetryBuilder::default()
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        // The defaults pass `build`'s checks (a test makes sure).
        RetryBuilder::default().assemble()
    }
}

impl<P, T> RetryLayer<P, T> {
    pub(crate) fn from_config(config: Arc<Config<P, T>>) -> Self {
        Self { config }
    }

    /// The budget shared by this layer's services.
    pub fn budget(&self) -> &super::Budget {
        &self.config.budget
    }
}

impl<P, T> Clone for RetryLayer<P, T> {
    fn clone(&self) -> Self {
        Self {
            config: Arc::clone(&self.config),
        }
    }
}

impl<P: fmt::Debug, T: fmt::Debug> fmt::Debug for RetryLayer<P, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl<S, P, T> Layer<S> for RetryLayer<P, T> {
    type Service = Retry<S, P, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::new(inner, Arc::clone(&self.config))
    }
}
