//! The browser build's queues into the driver loop: unbounded, for one
//! thread.
//!
//! The page's callbacks and the `Client` handles push; the loop pulls. A
//! browser gives no back-pressure to pass on (a WebSocket buffers whatever
//! arrives), so a sender never waits, and this is far less code than a
//! `futures` channel. Connections bound what they queue themselves, by
//! looking at [`Sender::len`] (see the driver's `Inbox`). Like one, the stream ends when every sender is gone,
//! and sending fails once the receiver is gone.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures::Stream;
use futures::stream::FusedStream;

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    receiving: bool,
    ended: bool,
    waker: Option<Waker>,
}

/// The pushing end; cheap to clone.
pub(crate) struct Sender<T>(Arc<Mutex<State<T>>>);

/// The pulling end: a [`Stream`] that ends when every sender is dropped.
pub(crate) struct Receiver<T>(Arc<Mutex<State<T>>>);

/// A new queue.
pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    let state = State { items: VecDeque::new(), senders: 1, receiving: true, ended: false, waker: None };
    let state = Arc::new(Mutex::new(state));
    (Sender(state.clone()), Receiver(state))
}

fn lock<T>(state: &Mutex<State<T>>) -> std::sync::MutexGuard<'_, State<T>> {
    state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<T> Sender<T> {
    /// Items queued and not yet pulled.
    pub(crate) fn len(&self) -> usize {
        lock(&self.0).items.len()
    }

    /// Queues `item`; gives it back if the receiver is gone.
    pub(crate) fn unbounded_send(&self, item: T) -> Result<(), T> {
        self.push_quietly(item)?;
        self.wake();
        Ok(())
    }

    /// Queues `item` without waking the receiver: [`wake`](Self::wake)
    /// follows once a run of items is in.
    pub(crate) fn push_quietly(&self, item: T) -> Result<(), T> {
        let mut s = lock(&self.0);
        if !s.receiving {
            return Err(item);
        }
        s.items.push_back(item);
        Ok(())
    }

    /// Wakes the receiver if it waits.
    pub(crate) fn wake(&self) {
        let waker = lock(&self.0).waker.take();
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        lock(&self.0).senders += 1;
        Sender(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut s = lock(&self.0);
        s.senders -= 1;
        let waker = if s.senders == 0 { s.waker.take() } else { None };
        drop(s);
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sender")
    }
}

impl<T> Stream for Receiver<T> {
    type Item = T;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut s = lock(&self.0);
        if let Some(item) = s.items.pop_front() {
            return Poll::Ready(Some(item));
        }
        if s.senders == 0 {
            s.ended = true;
            return Poll::Ready(None);
        }
        s.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl<T> FusedStream for Receiver<T> {
    fn is_terminated(&self) -> bool {
        lock(&self.0).ended
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let mut s = lock(&self.0);
        s.receiving = false;
        // Dropped outside the lock: an item may own other senders.
        let items = std::mem::take(&mut s.items);
        drop(s);
        drop(items);
    }
}
