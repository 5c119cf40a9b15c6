//! [`ReplayBody`]: a request body that can be sent again, buffered as it streams.

mod state;
#[cfg(test)]
mod tests;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tower::BoxError;

use state::{Cursor, Shared};

/// How much of a body [`ReplayBody::new`] keeps for replays: 64 KiB, as linkerd does.
pub const DEFAULT_REPLAY_CAP: usize = 64 * 1024;

/// A request body that can be sent again: it keeps the chunks of the first attempt as they
/// stream, up to a cap, and [`replay`](ReplayBody::replay) makes a copy that sends them again.
///
/// Nothing is read ahead: the first attempt streams the original body as it comes, and keeps
/// a copy of each chunk (a reference count for [`Bytes`], a copy for other buffers). A replay
/// sends the kept chunks, then reads on from the original body where the attempts before it
/// stopped (when a server answered before reading the whole body), so that every copy sends
/// the whole body, byte for byte, trailers included.
///
/// **Past the cap** (the body is longer than the cap) the chunks are dropped and only the copy
/// that was reading goes on; every other copy fails with [`ReplayBodyError::Capped`] instead
/// of sending a truncated or empty body, and `replay` returns `None`, so the retry layer does
/// not retry (it emits [`NotRetried`](crate::event::EventKind::NotRetried) with
/// [`NotReplayable`](crate::event::NotRetriedReason::NotReplayable)). A body whose
/// [`size_hint`](Body::size_hint) already says it is larger than the cap is past it from the
/// start: it is streamed once and never buffered. Until the original body is first read,
/// though, nothing is lost: `replay` then hands the whole body over to the new copy (the
/// earlier one fails if read), so a request whose connect failed is still retried with it.
///
/// If the original body fails, the copy reading it gets its error, the others
/// [`ReplayBodyError::SourceFailed`] once they reach that point, and `replay` returns `None`.
///
/// It deliberately does not implement `Clone`: a copy is made with `replay`, which may fail.
/// [`ReplayBodyLayer`](super::ReplayBodyLayer) wraps every request's body in one.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use redial::retry::http::ReplayBody;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let body = ReplayBody::new(Full::new(Bytes::from_static(b"hello")));
/// let again = body.replay().expect("nothing was read yet");
/// assert_eq!(body.collect().await?.to_bytes(), "hello");
/// assert_eq!(again.collect().await?.to_bytes(), "hello");
///
/// let large = ReplayBody::with_cap(Full::new(Bytes::from(vec![0; 100])), 64);
/// assert_eq!(large.collect().await?.to_bytes().len(), 100, "sent whole, once");
/// # let large = ReplayBody::with_cap(Full::new(Bytes::from(vec![0; 100])), 64);
/// # let mut large = std::pin::pin!(large);
/// # let _ = std::future::poll_fn(|cx| http_body::Body::poll_frame(large.as_mut(), cx)).await;
/// # assert!(large.replay().is_none(), "100 bytes do not fit in 64 once read");
/// # Ok(())
/// # }
/// ```
pub struct ReplayBody<B> {
    shared: Arc<Shared<B>>,
    cursor: Cursor,
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to [`DEFAULT_REPLAY_CAP`] bytes of it for replays.
    pub fn new(body: B) -> Self {
        Self::with_cap(body, DEFAULT_REPLAY_CAP)
    }

    /// Wraps `body`, keeping up to `cap` bytes of it for replays.
    pub fn with_cap(body: B, cap: usize) -> Self {
        Self {
            shared: Arc::new(Shared::new(body, cap)),
            cursor: Cursor::new(0),
        }
    }
}

impl<B> ReplayBody<B> {
    /// A copy that sends the whole body from its start, or `None` if that is no longer
    /// possible: the body went past the cap (or was known to be larger from the start), or it
    /// failed.
    ///
    /// The copy shares the buffer; copies can be read at the same time, in any order.
    pub fn replay(&self) -> Option<Self> {
        let cursor = self.shared.new_cursor()?;
        Some(Self {
            shared: Arc::clone(&self.shared),
            cursor,
        })
    }

    /// A copy for looking at, not for sending: the retry layer's template, from which
    /// [`replay`](ReplayBody::replay)s are made. Read, it fails unless it could have been a
    /// replay.
    pub(crate) fn for_inspection(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            cursor: self.shared.inspection_cursor(),
        }
    }

    /// Whether [`replay`](ReplayBody::replay) would give a copy now. It may stop being so as
    /// copies are read.
    pub fn is_replayable(&self) -> bool {
        self.shared.lock().is_replayable()
    }

    /// The most bytes kept for replays.
    pub fn cap(&self) -> usize {
        usize::try_from(self.shared.lock().cap()).unwrap_or(usize::MAX)
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        this.shared.poll_frame(&mut this.cursor, cx)
    }

    fn is_end_stream(&self) -> bool {
        self.shared.is_end_stream(&self.cursor)
    }

    fn size_hint(&self) -> SizeHint {
        self.shared.size_hint(&self.cursor)
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("ReplayBody")
            .field("copy", &self.cursor.id)
            .field("read", &self.cursor.read)
            .field("buffered", &state.buffered())
            .field("cap", &state.cap())
            .field("replayable", &state.is_replayable())
            .finish()
    }
}

/// Why a copy of a [`ReplayBody`] cannot send its body; it fails with this rather than send a
/// truncated one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReplayBodyError {
    /// Another copy read the original body past the cap, so what came before is not kept.
    Capped {
        /// The cap, in bytes.
        cap: usize,
    },
    /// The original body failed (that error went to the copy that was reading it).
    SourceFailed,
}

impl fmt::Display for ReplayBodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayBodyError::Capped { cap } => write!(
                f,
                "the request body went past the replay cap of {cap} bytes and cannot be sent again"
            ),
            ReplayBodyError::SourceFailed => {
                f.write_str("the request body failed and cannot be sent again")
            }
        }
    }
}

impl std::error::Error for ReplayBodyError {}
