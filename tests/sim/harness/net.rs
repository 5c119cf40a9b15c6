//! A turmoil TCP connector as a tower `Service<Target>`.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use turmoil::net::TcpStream;

/// A simulated stream: tokio's `AsyncRead`/`AsyncWrite`.
pub type Stream = TcpStream;

/// Where to connect: a host of the simulation and a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: &'static str,
    pub port: u16,
}

impl Target {
    pub const fn new(host: &'static str) -> Self {
        Self {
            host,
            port: super::PORT,
        }
    }
}

/// Connects over the simulated network. Always ready; every attempt is logged with its
/// instant and outcome.
///
/// turmoil refuses a connect at once when its SYN is dropped (a partition, a crashed host), in
/// the same instant; a real refusal comes back over the network. A refusal therefore takes one
/// tick here, so that a client that reconnects without any delay spins in virtual time (and is
/// caught by the scenarios' counts) instead of spinning one tick forever.
#[derive(Debug, Clone, Default)]
pub struct Connector {
    log: Rc<RefCell<Vec<Dial>>>,
    tag: u64,
}

/// One connect attempt.
#[derive(Debug, Clone, Copy)]
pub struct Dial {
    /// When it started.
    pub at: Duration,
    /// The host it was to.
    pub host: &'static str,
    /// Whether it connected.
    pub ok: bool,
    /// The tag of the connector that made it (e.g. which client).
    pub tag: u64,
}

impl Connector {
    pub fn new() -> Self {
        Self::default()
    }

    /// A connector sharing this one's log, whose attempts carry `tag`.
    pub fn tagged(&self, tag: u64) -> Self {
        Self {
            log: Rc::clone(&self.log),
            tag,
        }
    }

    /// Every attempt so far.
    pub fn dials(&self) -> Vec<Dial> {
        self.log.borrow().clone()
    }
}

impl tower::Service<Target> for Connector {
    type Response = Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream>>>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: Target) -> Self::Future {
        let log = Rc::clone(&self.log);
        let tag = self.tag;
        Box::pin(async move {
            let at = super::now();
            let result = TcpStream::connect((target.host, target.port)).await;
            log.borrow_mut().push(Dial {
                at,
                host: target.host,
                ok: result.is_ok(),
                tag,
            });
            if result.is_err() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            result
        })
    }
}
