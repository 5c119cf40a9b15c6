//! Unit tests of [`ReplayBody`], polled by hand with a body fed from the test.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};

use super::{ReplayBody, ReplayBodyError};

/// A body fed by the test: frames pushed with [`Feeder`], `Pending` while there are none.
struct Fed {
    feed: Arc<Mutex<Feed>>,
    hint: SizeHint,
}

#[derive(Default)]
struct Feed {
    frames: VecDeque<Result<Frame<Bytes>, io::Error>>,
    closed: bool,
    waker: Option<Waker>,
    polls: usize,
}

#[derive(Clone)]
struct Feeder(Arc<Mutex<Feed>>);

impl Feeder {
    fn push(&self, frame: Result<Frame<Bytes>, io::Error>) {
        let mut feed = self.0.lock().unwrap();
        feed.frames.push_back(frame);
        if let Some(waker) = feed.waker.take() {
            waker.wake();
        }
    }

    fn data(&self, chunk: &'static str) {
        self.push(Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))));
    }

    /// Queues `chunk` without waking the body's waker.
    fn queue(&self, chunk: &'static str) {
        let mut feed = self.0.lock().unwrap();
        feed.frames.push_back(Ok(Frame::data(Bytes::from(chunk))));
    }

    fn close(&self) {
        let mut feed = self.0.lock().unwrap();
        feed.closed = true;
        if let Some(waker) = feed.waker.take() {
            waker.wake();
        }
    }

    fn polls(&self) -> usize {
        self.0.lock().unwrap().polls
    }
}

fn fed() -> (Fed, Feeder) {
    let feed = Arc::new(Mutex::new(Feed::default()));
    let body = Fed {
        feed: feed.clone(),
        hint: SizeHint::default(),
    };
    (body, Feeder(feed))
}

impl Body for Fed {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let mut feed = self.feed.lock().unwrap();
        feed.polls += 1;
        match feed.frames.pop_front() {
            Some(frame) => Poll::Ready(Some(frame)),
            None if feed.closed => Poll::Ready(None),
            None => {
                feed.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

/// Counts its wake-ups.
#[derive(Default)]
struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counter() -> (Arc<Count>, Waker) {
    let count = Arc::new(Count::default());
    (count.clone(), Waker::from(count))
}

type Next = Poll<Option<Result<Frame<Bytes>, tower::BoxError>>>;

fn poll_with<B: Body<Data = Bytes, Error = tower::BoxError> + Unpin>(
    body: &mut B,
    waker: &Waker,
) -> Next {
    Pin::new(body).poll_frame(&mut Context::from_waker(waker))
}

fn poll<B: Body<Data = Bytes, Error = tower::BoxError> + Unpin>(body: &mut B) -> Next {
    poll_with(body, Waker::noop())
}

/// The data of a ready data frame.
fn data(next: Next) -> Bytes {
    match next {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().unwrap(),
        other => panic!("expected data, got {other:?}"),
    }
}

fn error(next: Next) -> tower::BoxError {
    match next {
        Poll::Ready(Some(Err(error))) => error,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn is_end(next: &Next) -> bool {
    matches!(next, Poll::Ready(None))
}

async fn collect<B>(body: B) -> Bytes
where
    B: Body<Data = Bytes, Error = tower::BoxError>,
{
    body.collect().await.unwrap().to_bytes()
}

/// A body fed `chunks`, then closed.
fn fed_with(chunks: &[&'static str]) -> (Fed, Feeder) {
    let (body, feeder) = fed();
    for chunk in chunks {
        feeder.data(chunk);
    }
    feeder.close();
    (body, feeder)
}

#[tokio::test]
async fn chunks_are_replayed_in_order_by_every_copy() {
    let (inner, _feeder) = fed_with(&["a", "bc", "", "def"]);
    let body = ReplayBody::new(inner);
    let template = body.replay().unwrap();
    assert_eq!(collect(body).await, "abcdef");
    let again = template.replay().unwrap();
    assert_eq!(again.size_hint().exact(), Some(6));
    assert!(!again.is_end_stream());
    assert_eq!(collect(again).await, "abcdef");
    assert_eq!(collect(template).await, "abcdef");
}

#[test]
fn trailers_follow_the_data_in_every_copy() {
    let (inner, feeder) = fed();
    let mut body = ReplayBody::new(inner);
    feeder.data("x");
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", "0".parse().unwrap());
    feeder.push(Ok(Frame::trailers(trailers.clone())));

    assert_eq!(data(poll(&mut body)), "x");
    let Poll::Ready(Some(Ok(frame))) = poll(&mut body) else {
        panic!("expected trailers");
    };
    assert_eq!(frame.trailers_ref(), Some(&trailers));
    assert!(body.is_end_stream());
    assert!(is_end(&poll(&mut body)));

    let mut again = body.replay().unwrap();
    assert_eq!(again.size_hint().exact(), Some(1));
    assert_eq!(data(poll(&mut again)), "x");
    assert!(!again.is_end_stream(), "the trailers are still to come");
    let Poll::Ready(Some(Ok(frame))) = poll(&mut again) else {
        panic!("expected trailers");
    };
    assert_eq!(frame.into_trailers().ok(), Some(trailers));
    assert!(again.is_end_stream());
    assert!(is_end(&poll(&mut again)));
}

#[test]
fn a_replay_reads_on_from_the_original_where_the_first_copy_stopped() {
    let (inner, feeder) = fed();
    let mut first = ReplayBody::new(inner);
    let template = first.replay().unwrap();
    feeder.data("ab");
    assert_eq!(data(poll(&mut first)), "ab");
    assert!(poll(&mut first).is_pending(), "the rest has not come yet");

    // The first attempt stopped there (a server answered early); a retry starts.
    let mut second = template.replay().unwrap();
    assert_eq!(second.size_hint().lower(), 2);
    assert_eq!(data(poll(&mut second)), "ab");
    assert!(poll(&mut second).is_pending());
    feeder.data("cd");
    feeder.close();
    assert_eq!(data(poll(&mut second)), "cd");
    assert!(is_end(&poll(&mut second)));
    assert!(second.is_end_stream());

    // The first copy gets the rest from the buffer, and later replays all of it.
    assert_eq!(data(poll(&mut first)), "cd");
    assert!(is_end(&poll(&mut first)));
    let third = template.replay().unwrap();
    assert_eq!(third.size_hint().exact(), Some(4));
    let polls = feeder.polls();
    let mut third = third;
    assert_eq!(data(poll(&mut third)), "ab");
    assert_eq!(data(poll(&mut third)), "cd");
    assert!(is_end(&poll(&mut third)));
    assert_eq!(
        feeder.polls(),
        polls,
        "a finished original is not polled again"
    );
}

#[test]
fn past_the_cap_only_the_reading_copy_goes_on() {
    let (inner, feeder) = fed_with(&["aaaa", "bbbb", "cccc", "dd"]);
    let mut first = ReplayBody::with_cap(inner, 8);
    assert_eq!(first.cap(), 8);
    let mut template = first.replay().unwrap();
    assert_eq!(data(poll(&mut template)), "aaaa");
    let mut early = template.replay().unwrap();

    assert_eq!(data(poll(&mut first)), "aaaa");
    assert_eq!(data(poll(&mut first)), "bbbb");
    assert!(first.is_replayable(), "8 bytes fit in 8");
    assert_eq!(data(poll(&mut first)), "cccc");
    assert!(!first.is_replayable());
    assert!(first.replay().is_none());
    assert!(template.replay().is_none());
    assert_eq!(data(poll(&mut first)), "dd");
    assert!(is_end(&poll(&mut first)));
    assert!(first.is_end_stream());
    drop(feeder);

    // The others fail instead of sending a truncated body, wherever they were.
    for copy in [&mut template, &mut early] {
        assert!(!copy.is_end_stream());
        let error = error(poll(copy));
        assert_eq!(
            error.downcast_ref::<ReplayBodyError>(),
            Some(&ReplayBodyError::Capped { cap: 8 })
        );
    }
}

#[tokio::test]
async fn a_body_known_to_be_larger_than_the_cap_is_never_buffered() {
    let body = ReplayBody::with_cap(Full::new(Bytes::from(vec![7; 100])), 64);
    assert_eq!(body.size_hint().exact(), Some(100));
    // Never read, it is whole: a copy (the retry of a request whose connect failed) takes it
    // over, and the first copy may no longer be read.
    assert!(body.is_replayable());
    let taken_over = body.replay().expect("an unread body can be handed over");
    assert!(body.is_replayable());
    let last = taken_over.replay().expect("still unread");
    assert_eq!(collect(last).await.len(), 100, "sent once, whole");
    assert!(
        !taken_over.is_replayable(),
        "read past the cap: no more copies"
    );
    assert!(taken_over.replay().is_none());
    let mut earlier = std::pin::pin!(taken_over);
    let failed = std::future::poll_fn(|cx| earlier.as_mut().poll_frame(cx)).await;
    assert!(
        matches!(failed, Some(Err(_))),
        "a copy that lost the body fails instead of sending part of it"
    );

    let fits = ReplayBody::with_cap(Full::new(Bytes::from(vec![7; 64])), 64);
    let again = fits.replay().unwrap();
    assert_eq!(collect(fits).await.len(), 64);
    assert_eq!(collect(again).await.len(), 64);
}

#[tokio::test]
async fn an_empty_body_ends_at_once_in_every_copy() {
    let body = ReplayBody::new(Full::new(Bytes::new()));
    assert!(body.is_end_stream());
    let again = body.replay().unwrap();
    assert!(again.is_end_stream());
    assert_eq!(again.size_hint().exact(), Some(0));
    assert_eq!(collect(body).await, "");
    assert_eq!(collect(again).await, "");
}

#[test]
fn size_hints_add_what_is_buffered_to_what_the_original_has_left() {
    let (mut inner, feeder) = fed();
    inner.hint = SizeHint::with_exact(5);
    let mut first = ReplayBody::new(inner);
    assert_eq!(first.size_hint().exact(), Some(5));
    feeder.data("abc");
    assert_eq!(data(poll(&mut first)), "abc");
    // `Fed` does not shrink its hint: a replay adds the 3 buffered bytes to it.
    let again = first.replay().unwrap();
    assert_eq!(again.size_hint().exact(), Some(8));
    assert_eq!(first.size_hint().exact(), Some(5));
}

#[test]
fn a_failed_original_fails_every_copy_after_what_was_buffered() {
    let (inner, feeder) = fed();
    let mut first = ReplayBody::new(inner);
    let mut other = first.replay().unwrap();
    feeder.data("ok");
    feeder.push(Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone")));
    assert_eq!(data(poll(&mut first)), "ok");
    let original = error(poll(&mut first));
    assert_eq!(
        original.downcast_ref::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
    assert!(first.replay().is_none());
    assert_eq!(data(poll(&mut other)), "ok");
    let error = error(poll(&mut other));
    assert_eq!(
        error.downcast_ref::<ReplayBodyError>(),
        Some(&ReplayBodyError::SourceFailed)
    );
    assert!(!other.is_end_stream());
}

#[test]
fn every_waiting_copy_is_woken_even_when_the_one_that_polled_last_is_gone() {
    let (inner, feeder) = fed();
    let mut first = ReplayBody::new(inner);
    let mut second = first.replay().unwrap();
    let (woken_first, waker_first) = counter();
    let (woken_second, waker_second) = counter();
    assert!(poll_with(&mut second, &waker_second).is_pending());
    assert!(poll_with(&mut first, &waker_first).is_pending());
    // The first attempt is abandoned; the original body last saw its poll.
    drop(first);
    feeder.data("late");
    assert_eq!(woken_second.0.load(Ordering::SeqCst), 1);
    assert_eq!(woken_first.0.load(Ordering::SeqCst), 1);
    assert_eq!(data(poll_with(&mut second, &waker_second)), "late");
}

#[test]
fn a_copy_waiting_at_the_end_is_woken_by_data_another_copy_read() {
    let (inner, feeder) = fed();
    let mut first = ReplayBody::with_cap(inner, 4);
    let mut second = first.replay().unwrap();
    let (woken, waker) = counter();
    assert!(poll_with(&mut second, &waker).is_pending());
    // Queued without waking anyone, then read by the first copy.
    feeder.queue("ab");
    assert_eq!(data(poll(&mut first)), "ab");
    assert_eq!(woken.0.load(Ordering::SeqCst), 1);
    assert_eq!(data(poll_with(&mut second, &waker)), "ab");

    // Past the cap, the waiting copy is woken to fail.
    assert!(poll_with(&mut second, &waker).is_pending());
    feeder.queue("cde");
    assert_eq!(data(poll(&mut first)), "cde");
    assert_eq!(woken.0.load(Ordering::SeqCst), 2);
    assert!(error(poll_with(&mut second, &waker)).is::<ReplayBodyError>());
}

#[test]
fn debug_shows_the_buffer_not_the_bytes() {
    let (inner, feeder) = fed_with(&["secret"]);
    let mut body = ReplayBody::new(inner);
    assert_eq!(data(poll(&mut body)), "secret");
    let shown = format!("{body:?}");
    assert!(shown.contains("buffered: 6"), "{shown}");
    assert!(!shown.contains("secret"), "{shown}");
    drop(feeder);
}
