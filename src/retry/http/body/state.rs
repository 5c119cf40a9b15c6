//! The state every copy of one [`ReplayBody`](super::ReplayBody) shares: the original body,
//! what has been buffered of it, and how it ended.

use std::mem;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tower::BoxError;

use super::ReplayBodyError;

/// One frame as [`Body::poll_frame`] returns it.
pub(super) type Polled = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

/// Where one copy is: its place in the buffer and what it has delivered.
#[derive(Debug)]
pub(super) struct Cursor {
    /// Tells the copy that read past the cap from the others.
    pub(super) id: u64,
    /// The next buffered chunk it delivers.
    pub(super) chunk: usize,
    /// Bytes of the buffer delivered so far.
    pub(super) read: u64,
    pub(super) trailers_sent: bool,
}

impl Cursor {
    pub(super) fn new(id: u64) -> Self {
        Self {
            id,
            chunk: 0,
            read: 0,
            trailers_sent: false,
        }
    }
}

/// How far the original body has been read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// More may come.
    Open,
    /// It ended (with or without trailers).
    Done,
    /// It failed; the copy that read it got its error.
    Failed,
}

/// The shared part of a [`ReplayBody`](super::ReplayBody).
pub(super) struct Shared<B> {
    state: Mutex<State<B>>,
    /// Wakes every copy waiting for the original body. The original body keeps only the last
    /// waker it was given, and the copy that gave it may be dropped (an attempt abandoned) while
    /// another copy waits for the same data: so it is given this one, which wakes them all.
    wakers: Arc<Wakers>,
    fan_out: Waker,
}

pub(super) struct State<B> {
    /// The original body, until it has ended or failed.
    inner: Option<Pin<Box<B>>>,
    chunks: Vec<Bytes>,
    /// Bytes in `chunks`.
    buffered: u64,
    cap: u64,
    trailers: Option<HeaderMap>,
    end: End,
    /// Once the original body went past the cap: the one copy that reads on (the others fail).
    capped_by: Option<u64>,
    /// Whether the original body was ever polled. Until it is, a body past the cap is still
    /// whole, and can be handed to a new copy (a retry of a request that was never sent).
    touched: bool,
    next_id: u64,
}

impl<B> Shared<B> {
    /// Shares `inner`; the first copy has id 0. A body that says it is larger than `cap` is
    /// past the cap from the start.
    pub(super) fn new(inner: B, cap: usize) -> Self
    where
        B: Body,
    {
        let cap = u64::try_from(cap).unwrap_or(u64::MAX);
        let too_large = inner.size_hint().lower() > cap;
        let wakers = Arc::new(Wakers::default());
        Self {
            state: Mutex::new(State {
                inner: Some(Box::pin(inner)),
                chunks: Vec::new(),
                buffered: 0,
                cap,
                trailers: None,
                end: End::Open,
                capped_by: too_large.then_some(0),
                touched: false,
                next_id: 1,
            }),
            fan_out: Waker::from(Arc::clone(&wakers)),
            wakers,
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next frame for the copy at `cursor`.
    pub(super) fn poll_frame(&self, cursor: &mut Cursor, cx: &mut Context<'_>) -> Polled
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let mut state = self.lock();
        if let Some(owner) = state.capped_by {
            if owner != cursor.id {
                return Poll::Ready(Some(Err(state.capped_error())));
            }
            // The copy that went past the cap reads on, buffering nothing.
            return self.poll_inner(&mut state, cx);
        }
        if let Some(chunk) = state.chunks.get(cursor.chunk) {
            let chunk = chunk.clone();
            cursor.chunk += 1;
            cursor.read += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(trailers) = &state.trailers {
            if cursor.trailers_sent {
                return Poll::Ready(None);
            }
            cursor.trailers_sent = true;
            return Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))));
        }
        match state.end {
            End::Done => return Poll::Ready(None),
            End::Failed => return Poll::Ready(Some(Err(ReplayBodyError::SourceFailed.into()))),
            End::Open => {}
        }
        let frame = match self.poll_inner(&mut state, cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let frame = match frame.into_data() {
            Ok(chunk) => {
                let len = chunk.len() as u64;
                if state.buffered.saturating_add(len) > state.cap {
                    // Past the cap: this copy reads on alone; the others (and any replay made
                    // later) fail rather than send a truncated body.
                    state.capped_by = Some(cursor.id);
                    state.chunks = Vec::new();
                    state.buffered = 0;
                } else if len > 0 {
                    state.chunks.push(chunk.clone());
                    state.buffered += len;
                    cursor.chunk += 1;
                    cursor.read += len;
                }
                Frame::data(chunk)
            }
            Err(frame) => {
                if let Some(trailers) = frame.trailers_ref() {
                    // Trailers are the last frame.
                    state.trailers = Some(trailers.clone());
                    state.end = End::Done;
                    state.inner = None;
                    cursor.trailers_sent = true;
                }
                frame
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    /// Polls the original body for the copy whose waker `cx` has, noting its end or failure,
    /// and wakes the other waiting copies when something happened.
    fn poll_inner(&self, state: &mut State<B>, cx: &mut Context<'_>) -> Polled
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let Some(inner) = state.inner.as_mut() else {
            return Poll::Ready(match state.end {
                End::Failed => Some(Err(ReplayBodyError::SourceFailed.into())),
                End::Open | End::Done => None,
            });
        };
        self.wakers.register(cx.waker());
        state.touched = true;
        let polled = inner
            .as_mut()
            .poll_frame(&mut Context::from_waker(&self.fan_out));
        let polled = match polled {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                state.end = End::Done;
                state.inner = None;
                None
            }
            Poll::Ready(Some(Err(error))) => {
                state.end = End::Failed;
                state.inner = None;
                Some(Err(error.into()))
            }
            Poll::Ready(Some(Ok(frame))) => Some(Ok(
                frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
            )),
        };
        self.wakers.wake_others(cx.waker());
        Poll::Ready(polled)
    }

    /// A cursor for a copy that is looked at but never sent, given even once the body cannot
    /// be replayed: read, it would fail like any other copy that came too late.
    pub(super) fn inspection_cursor(&self) -> Cursor {
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        Cursor::new(id)
    }

    /// A copy for another attempt, unless the body went past the cap or failed.
    pub(super) fn new_cursor(&self) -> Option<Cursor> {
        let mut state = self.lock();
        if !state.is_replayable() {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        if state.capped_by.is_some() {
            // Past the cap but never read: the new copy takes the whole body over, and the
            // copy that held it fails if it is ever read.
            state.capped_by = Some(id);
        }
        Some(Cursor::new(id))
    }

    pub(super) fn size_hint(&self, cursor: &Cursor) -> SizeHint
    where
        B: Body,
    {
        let state = self.lock();
        let inner = state.inner.as_ref().map(|inner| inner.size_hint());
        match state.capped_by {
            Some(owner) if owner == cursor.id => inner.unwrap_or_else(|| SizeHint::with_exact(0)),
            Some(_) => SizeHint::default(),
            None if state.end == End::Failed => SizeHint::default(),
            None => {
                let left = state.buffered.saturating_sub(cursor.read);
                match inner {
                    None => SizeHint::with_exact(left),
                    Some(inner) => {
                        let mut hint = SizeHint::new();
                        hint.set_lower(inner.lower().saturating_add(left));
                        if let Some(upper) = inner.upper().and_then(|u| u.checked_add(left)) {
                            if upper >= hint.lower() {
                                hint.set_upper(upper);
                            }
                        }
                        hint
                    }
                }
            }
        }
    }

    pub(super) fn is_end_stream(&self, cursor: &Cursor) -> bool
    where
        B: Body,
    {
        let state = self.lock();
        let inner_ended = state
            .inner
            .as_ref()
            .is_none_or(|inner| inner.is_end_stream());
        match state.capped_by {
            Some(owner) => owner == cursor.id && state.end != End::Failed && inner_ended,
            None => {
                cursor.chunk >= state.chunks.len()
                    && (state.trailers.is_none() || cursor.trailers_sent)
                    && match state.end {
                        End::Done => true,
                        End::Failed => false,
                        End::Open => inner_ended,
                    }
            }
        }
    }
}

impl<B> State<B> {
    pub(super) fn is_replayable(&self) -> bool {
        (self.capped_by.is_none() || !self.touched) && self.end != End::Failed
    }

    pub(super) fn cap(&self) -> u64 {
        self.cap
    }

    pub(super) fn buffered(&self) -> u64 {
        self.buffered
    }

    fn capped_error(&self) -> BoxError {
        ReplayBodyError::Capped {
            cap: usize::try_from(self.cap).unwrap_or(usize::MAX),
        }
        .into()
    }
}

/// The wakers of the copies waiting for the original body.
#[derive(Default)]
struct Wakers(Mutex<Vec<Waker>>);

impl Wakers {
    fn register(&self, waker: &Waker) {
        let mut wakers = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !wakers.iter().any(|w| w.will_wake(waker)) {
            wakers.push(waker.clone());
        }
    }

    /// Wakes every waiting copy but the one whose waker is `current` (it is running).
    fn wake_others(&self, current: &Waker) {
        let wakers = mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for waker in wakers {
            if !waker.will_wake(current) {
                waker.wake();
            }
        }
    }
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for waker in wakers {
            waker.wake();
        }
    }
}
