//! The gRPC health check (`grpc.health.v1`).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http_body::Body as HttpBody;
use tonic::body::Body;
use tonic::client::GrpcService;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::BoxError;

use super::HealthCheck;

/// A [`HealthCheck`] that asks the peer's `grpc.health.v1.Health/Check`: up when the answer is
/// `SERVING`; `NOT_SERVING`, `UNKNOWN`, `SERVICE_UNKNOWN` or any error (the call failed, the
/// service name is not known to the server) is down.
///
/// The check needs a gRPC service to call the peer through, which `channel` makes from the
/// peer's key: typically a clone of a tonic `Channel` kept per peer (cloning one is cheap and
/// shares its connection), or any `GrpcService` such as a channel wrapped in redial's layers.
/// redial itself does not pull in tonic's transport.
///
/// ```
/// use std::collections::HashMap;
/// use std::net::SocketAddr;
/// use redial::health::check::GrpcCheck;
/// use tonic::transport::{Channel, Endpoint};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tonic::transport::Error> {
/// let addrs: [SocketAddr; 2] = [([10, 0, 0, 7], 50051).into(), ([10, 0, 0, 8], 50051).into()];
/// let mut channels = HashMap::new();
/// for addr in addrs {
///     // Connects on first use, and again after the connection is lost.
///     let channel: Channel = Endpoint::from_shared(format!("http://{addr}"))?.connect_lazy();
///     channels.insert(addr, channel);
/// }
/// let check = GrpcCheck::new(move |addr: &SocketAddr| channels[addr].clone())
///     .service("my.package.MyService");
/// # let _ = check;
/// # Ok(())
/// # }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub struct GrpcCheck<F> {
    channel: F,
    service: Arc<str>,
}

impl<F> GrpcCheck<F> {
    /// A check of the whole server (service name `""`) through `channel(key)`.
    pub fn new(channel: F) -> Self {
        Self {
            channel,
            service: Arc::from(""),
        }
    }

    /// Asks about one service, as the server registered it (e.g. `"my.package.MyService"`),
    /// instead of the whole server.
    pub fn service(mut self, name: impl Into<Arc<str>>) -> Self {
        self.service = name.into();
        self
    }
}

impl<K, F, T> HealthCheck<K> for GrpcCheck<F>
where
    F: Fn(&K) -> T,
    T: GrpcService<Body> + Send + 'static,
    T::Future: Send,
    T::Error: Into<BoxError>,
    T::ResponseBody: HttpBody<Data = Bytes> + Send + 'static,
    <T::ResponseBody as HttpBody>::Error: Into<BoxError> + Send,
{
    fn check(&self, peer: &K) -> impl Future<Output = Result<(), BoxError>> + Send {
        let mut client = HealthClient::new((self.channel)(peer));
        let service = Arc::clone(&self.service);
        async move {
            let request = HealthCheckRequest {
                service: service.to_string(),
            };
            let status = client.check(request).await?.into_inner().status();
            match status {
                ServingStatus::Serving => Ok(()),
                status => Err(NotServing { service, status }.into()),
            }
        }
    }
}

impl<F> fmt::Debug for GrpcCheck<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcCheck")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// The peer answered the gRPC health check with a status other than `SERVING`.
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotServing {
    service: Arc<str>,
    status: ServingStatus,
}

impl NotServing {
    /// The service asked about (`""`: the whole server).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The status the peer reported.
    pub fn status(&self) -> ServingStatus {
        self.status
    }
}

impl fmt::Display for NotServing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = if self.service.is_empty() {
            "the server"
        } else {
            &self.service
        };
        write!(
            f,
            "gRPC health check: {name} reports {}",
            self.status.as_str_name()
        )
    }
}

impl std::error::Error for NotServing {}
