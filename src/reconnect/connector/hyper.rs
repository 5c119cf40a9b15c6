//! With feature `hyper`: [`TrackedIo`] speaks hyper's IO traits and hyper-util's `Connection`,
//! so it drops into hyper-util's legacy `Client` and tonic's `connect_with_connector`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBuf, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::{Connected, Connection};

use super::io::{TrackedIo, note_read, note_write};
use crate::peers::PeerKey;

/// Reads go through a small buffer of ours until the first bytes arrive, because hyper's cursor
/// cannot tell safely how much the inner IO wrote into it; after that, straight through.
const FIRST_READ: usize = 1024;

impl<IO: Read, K: PeerKey> Read for TrackedIo<IO, K> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut cursor: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if *this.answered {
            let poll = this.io.poll_read(cx, cursor);
            if let Poll::Ready(result) = &poll {
                note_read(this.connection, this.answered, result, false);
            }
            return poll;
        }
        let mut scratch = [0u8; FIRST_READ];
        let len = cursor.remaining().min(FIRST_READ);
        let mut buf = ReadBuf::new(&mut scratch[..len]);
        let poll = this.io.poll_read(cx, buf.unfilled());
        if let Poll::Ready(result) = &poll {
            let filled = buf.filled();
            cursor.put_slice(filled);
            note_read(this.connection, this.answered, result, !filled.is_empty());
        }
        poll
    }
}

impl<IO: Write, K: PeerKey> Write for TrackedIo<IO, K> {
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

    fn is_write_vectored(&self) -> bool {
        self.get_ref().is_write_vectored()
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
}

impl<IO: Connection, K: PeerKey> Connection for TrackedIo<IO, K> {
    fn connected(&self) -> Connected {
        self.get_ref().connected()
    }
}
