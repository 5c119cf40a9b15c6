//! tower's `Buffer` for the simulation's single-threaded hosts.
//!
//! A retry layer above a balancer needs a `Clone` service, and tower's p2c `Balance` is not
//! one: the recommended stack puts a `Buffer` between them (see `examples/stack.rs`). tower's
//! `Buffer` spawns its worker with `tokio::spawn` and so needs `Send` services, which the
//! simulated network's are not (`Rc` inside). [`LocalBuffer`] is the same idea for one thread:
//! callers queue requests on a channel, one worker task (`spawn_local`) owns the service, waits
//! for it to be ready, calls it, and hands each caller its response future.
//!
//! The queue is unbounded, so `poll_ready` is always ready: the load comes from a fixed number
//! of client loops, each with one request at a time, so it cannot grow without bound.

use std::future::{Future, poll_fn};
use std::pin::Pin;

use tokio::sync::{mpsc, oneshot};
use tower::{BoxError, Service};

type Reply<F> = oneshot::Sender<Result<F, BoxError>>;

/// A clonable handle to a service driven by one local worker task.
pub struct LocalBuffer<Req, F> {
    queue: mpsc::UnboundedSender<(Req, Reply<F>)>,
}

impl<Req, F> Clone for LocalBuffer<Req, F> {
    fn clone(&self) -> Self {
        Self {
            queue: self.queue.clone(),
        }
    }
}

impl<Req: 'static, F: 'static> LocalBuffer<Req, F> {
    /// Spawns the worker that owns `service` on the current `LocalSet` (a turmoil host's).
    pub fn new<S>(mut service: S) -> Self
    where
        S: Service<Req, Future = F> + 'static,
        S::Error: Into<BoxError>,
    {
        let (queue, mut requests) = mpsc::unbounded_channel::<(Req, Reply<F>)>();
        tokio::task::spawn_local(async move {
            while let Some((request, reply)) = requests.recv().await {
                let answer = match poll_fn(|cx| service.poll_ready(cx)).await {
                    Ok(()) => Ok(service.call(request)),
                    Err(error) => Err(error.into()),
                };
                // The caller may have given up meanwhile: its request is dropped unsent.
                let _ = reply.send(answer);
            }
        });
        Self { queue }
    }
}

impl<Req, F, T, E> Service<Req> for LocalBuffer<Req, F>
where
    Req: 'static,
    F: Future<Output = Result<T, E>> + 'static,
    E: Into<BoxError>,
{
    type Response = T;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<T, BoxError>>>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let (reply, answer) = oneshot::channel();
        let queued = self.queue.send((request, reply));
        Box::pin(async move {
            queued.map_err(|_| "the buffer's worker is gone")?;
            let future = answer
                .await
                .map_err(|_| "the buffer's worker dropped the request")??;
            future.await.map_err(Into::into)
        })
    }
}
