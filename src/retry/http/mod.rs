//! HTTP retries: which responses and errors are retried, `Retry-After`, and request bodies that
//! can be sent again.
//!
//! - [`HttpClassifier`] retries 502, 503, 504, 429 and 408 (configurable) for idempotent
//!   requests (or those marked [`RetryNonIdempotent`]), honouring [`retry_after`]; a request
//!   that failed before anything was sent (a failed connect) is retried whatever its method.
//! - [`ReplayBody`] keeps a body's chunks as they stream, up to a cap (64 KiB by default), so
//!   that a retry sends the same bytes; a longer body is sent once and not retried, never
//!   truncated. [`ReplayBodyLayer`] wraps every request's body in one.
//!
//! A retry stack over any HTTP client service, here a stand-in that is unavailable once, then
//! echoes the request body (with hyper-util, the client is
//! `Client<_, ReplayBody<B>>`):
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Full};
//! use redial::backoff::Backoff;
//! use redial::retry::RetryLayer;
//! use redial::retry::http::{HttpClassifier, ReplayBody, ReplayBodyLayer};
//! use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let calls = Arc::new(AtomicU32::new(0));
//! let seen = calls.clone();
//! let server = service_fn(move |request: Request<ReplayBody<Full<Bytes>>>| {
//!     let first = seen.fetch_add(1, Ordering::SeqCst) == 0;
//!     async move {
//!         let body = request.into_body().collect().await?.to_bytes();
//!         let response = if first {
//!             Response::builder()
//!                 .status(StatusCode::SERVICE_UNAVAILABLE)
//!                 .header("retry-after", "2")
//!                 .body(Bytes::new())?
//!         } else {
//!             Response::new(body)
//!         };
//!         Ok::<_, BoxError>(response)
//!     }
//! });
//!
//! let backoff = Backoff::builder()
//!     .initial(Duration::from_millis(10))
//!     .max(Duration::from_secs(5))
//!     .build()?;
//! let client = ServiceBuilder::new()
//!     .layer(ReplayBodyLayer::new())
//!     .layer(
//!         RetryLayer::builder()
//!             .classifier(HttpClassifier::new())
//!             .backoff(backoff)
//!             .build()?,
//!     )
//!     .service(server);
//!
//! let start = tokio::time::Instant::now();
//! let request = Request::put("http://api.test/items/7").body(Full::new(Bytes::from("seven")))?;
//! let response = client.oneshot(request).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.into_body(), "seven", "the retry sent the same body");
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! assert_eq!(start.elapsed(), Duration::from_secs(2), "as Retry-After asked");
//! # Ok(())
//! # }
//! ```
//!
//! [`HttpClassifier`] also replays requests whose body is `Clone` (such as `Full<Bytes>` or
//! `String`) without the body layer.

mod body;
mod classify;
mod layer;
mod replay;
mod retry_after;

pub use body::{DEFAULT_REPLAY_CAP, ReplayBody, ReplayBodyError};
pub use classify::{HttpClassifier, RetryNonIdempotent};
pub use layer::{ReplayBodyLayer, ReplayBodyService};
pub use retry_after::retry_after;
