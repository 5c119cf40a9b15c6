//! [`TrackedIo`]: a connection that tells the peer's tracker how its life goes.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::peers::{PeerHandle, PeerKey};
use crate::reconnect::connection::OpenConnection;

pin_project! {
    /// A connection made by the reconnecting connector. It reads and writes like the IO inside
    /// (tokio's `AsyncRead`/`AsyncWrite`, and with feature `hyper` hyper's `rt::Read`/`rt::Write`
    /// and hyper-util's `Connection`), and reports to the peer's tracker:
    ///
    /// - the first bytes received count as a success of the peer, which proves that it works
    ///   and resets its backoff (later bytes are not counted: a connection cannot tell one
    ///   response from the next);
    /// - an IO error ends the connection as broken (the peer turns suspect);
    /// - dropping it closes the connection; one that closes before any proof (and before
    ///   `stable_after` of uptime) is flapping, so the peer's backoff keeps growing.
    pub struct TrackedIo<IO, K: PeerKey> {
        #[pin]
        pub(super) io: IO,
        pub(super) connection: OpenConnection<K>,
        pub(super) answered: bool,
    }
}

impl<IO, K: PeerKey> TrackedIo<IO, K> {
    pub(crate) fn new(io: IO, peer: PeerHandle<K>, stable_after: Duration) -> Self {
        Self {
            io,
            connection: OpenConnection::new(peer, stable_after),
            answered: false,
        }
    }

    /// The IO inside.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The IO inside, mutably.
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    /// The peer this connection is to.
    pub fn peer(&self) -> &PeerHandle<K> {
        self.connection.peer()
    }
}

impl<IO: fmt::Debug, K: PeerKey> fmt::Debug for TrackedIo<IO, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedIo")
            .field("io", &self.io)
            .field("peer", self.connection.peer().key())
            .finish()
    }
}

/// Bookkeeping shared by the tokio and hyper IO traits.
pub(super) fn note_read<K: PeerKey>(
    connection: &mut OpenConnection<K>,
    answered: &mut bool,
    result: &io::Result<()>,
    got_bytes: bool,
) {
    match result {
        Ok(()) if got_bytes && !*answered => {
            *answered = true;
            connection.answered();
        }
        Ok(()) => {}
        Err(error) => connection.close(Some(error)),
    }
}

pub(super) fn note_write<K: PeerKey, T>(
    connection: &mut OpenConnection<K>,
    poll: &Poll<io::Result<T>>,
) {
    if let Poll::Ready(Err(error)) = poll {
        connection.close(Some(error));
    }
}

impl<IO: AsyncRead, K: PeerKey> AsyncRead for TrackedIo<IO, K> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let poll = this.io.poll_read(cx, buf);
        if let Poll::Ready(result) = &poll {
            let got_bytes = buf.filled().len() > before;
            note_read(this.connection, this.answered, result, got_bytes);
        }
        poll
    }
}

impl<IO: AsyncWrite, K: PeerKey> AsyncWrite for TrackedIo<IO, K> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.io.poll_write(cx, buf);
        note_write(this.connection, &poll);
        poll
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let poll = this.io.poll_flush(cx);
        note_write(this.connection, &poll);
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let poll = this.io.poll_shutdown(cx);
        note_write(this.connection, &poll);
        poll
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let poll = this.io.poll_write_vectored(cx, bufs);
        note_write(this.connection, &poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
