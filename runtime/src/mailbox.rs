//! The cross-shard transport: one inbox per shard, fed by every shard.
//!
//! A shard sends a [`Message`] to another shard through its [`Postman`] and receives its own
//! messages from its [`Mailbox`]. The channel underneath is flume (lock-free on the fast path
//! for our use, wakes a parked glommio executor through its foreign-wake eventfd). It is kept
//! behind these two types so it can be swapped (for a simulator's queue, or a ring per shard
//! pair) without touching callers.
//!
//! Bounds: inboxes are unbounded *channels*, but the traffic in them is bounded by construction.
//! Apart from `Adopt` (one per WebSocket accepted by the sending shard, so bounded by its
//! accept rate and descriptor limit), every message is either a call (a shard may have at most `forwarded_calls_max` calls of its own
//! awaiting replies: see [`crate::shard`]) or the single reply to one such call, so an inbox holds
//! at most `2 × shards × forwarded_calls_max` messages. Bounding the senders, not the channel,
//! means a reply never has to wait for space, which is what would deadlock two busy shards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pinion_net::server::Detached;

use crate::protocol::{Forwarded, Reply};
use crate::realtime::WsRequest;

/// Identifies a call awaiting its reply on the shard that sent it.
pub(crate) type Token = u32;

pub(crate) enum Message {
    /// Run `call` on the receiving (owning) shard and send the reply to shard `from`.
    Call {
        from: usize,
        token: Token,
        call: Forwarded,
    },
    /// The reply to the call `token` this shard sent earlier.
    Reply { token: Token, reply: Reply },
    /// A WebSocket to one of the receiving shard's actors, accepted (and answered 101) by the
    /// sending shard: serve it here (see `realtime`, Placement).
    Adopt {
        socket: Detached,
        request: WsRequest,
    },
    /// Stop accepting work and shut the shard down.
    Stop,
}

/// A shard's receiving end.
pub(crate) struct Mailbox {
    inbox: flume::Receiver<Message>,
    /// Set by senders after a send: lets the shard notice mail with one relaxed load at its hot
    /// points, without taking the channel's lock and without waiting for the executor to poll
    /// the wake-up eventfd (which a busy executor does only when its run queue drains).
    waiting: Arc<AtomicBool>,
}

/// A shard's sending ends, one per shard (including itself).
#[derive(Clone)]
pub(crate) struct Postman {
    inboxes: Vec<flume::Sender<Message>>,
    waiting: Vec<Arc<AtomicBool>>,
}

/// Builds the inboxes of `shard_count` shards: one mailbox each, and a postman every shard (and the
/// thread that starts and stops the server) can clone.
pub(crate) fn wire(shard_count: usize) -> (Vec<Mailbox>, Postman) {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..shard_count).map(|_| flume::unbounded()).unzip();
    let waiting: Vec<Arc<AtomicBool>> = (0..shard_count)
        .map(|_| Arc::new(AtomicBool::new(false)))
        .collect();
    let mailboxes = receivers
        .into_iter()
        .zip(&waiting)
        .map(|(inbox, waiting)| Mailbox {
            inbox,
            waiting: waiting.clone(),
        })
        .collect();
    (
        mailboxes,
        Postman {
            inboxes: senders,
            waiting,
        },
    )
}

impl Postman {
    /// Sends `message` to `shard`; false if that shard has already ended (its inbox is gone),
    /// in which case the message is dropped.
    pub(crate) fn send(&self, shard: usize, message: Message) -> bool {
        if self.inboxes[shard].send(message).is_err() {
            return false;
        }
        // Release: a receiver that sees the flag set finds the message in the channel.
        self.waiting[shard].store(true, Ordering::Release);
        true
    }

    pub(crate) fn shard_count(&self) -> usize {
        self.inboxes.len()
    }

    /// Asks every shard to stop.
    pub(crate) fn stop_all(&self) {
        for shard in 0..self.inboxes.len() {
            self.send(shard, Message::Stop);
        }
    }
}

impl Mailbox {
    /// Waits for the next message.
    pub(crate) async fn recv(&self) -> Option<Message> {
        self.inbox.recv_async().await.ok()
    }

    /// The next message if one is already queued, to drain a burst without re-parking.
    pub(crate) fn try_recv(&self) -> Option<Message> {
        self.inbox.try_recv().ok()
    }

    /// Sets the flag again (mail is left for later).
    pub(crate) fn set_waiting(&self) {
        self.waiting.store(true, Ordering::Relaxed);
    }

    /// Whether mail may have arrived since the last call (clears the flag). One atomic load
    /// when there is none.
    pub(crate) fn take_waiting(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) && self.waiting.swap(false, Ordering::Acquire)
    }
}
