//! A TCP driver on the shard's own io_uring: multishot accept, multishot receive into a ring of
//! provided buffers, and batched sends.
//!
//! Why not glommio's `TcpStream`: it answers every read with a `recv` syscall and re-arms a
//! one-shot poll on glommio's ring, whose completion arrives as task work that interrupts the
//! running shard (an IPI). Per request that costs a `recv`, a poll, an IPI and a share of an
//! `io_uring_enter`, where nginx pays one edge-triggered epoll wake-up. A throwaway probe of the
//! design below answered 77–104k req/s at 8–10 µs of CPU per request on the machine where nginx
//! answered 51–68k at 14–18 µs (see README, Performance).
//!
//! The design:
//! * One ring per shard, set up with `SINGLE_ISSUER | COOP_TASKRUN | DEFER_TASKRUN`: completions
//!   never interrupt the shard; they are run when the shard asks (`IORING_ENTER_GETEVENTS`).
//! * The listener has one multishot accept; every connection has one multishot receive that
//!   stays armed across requests, filling buffers from a provided-buffer ring (`BUF_COUNT` ×
//!   `BUF_BYTES`); received bytes are copied into the connection's own queue and the buffer goes
//!   straight back to the ring.
//! * Submissions are batched: pushing an entry only marks the driver dirty and wakes its flush
//!   loop, which runs after the tasks that are already runnable and submits them all with one
//!   `io_uring_enter`.
//! * Glommio learns about our completions through an eventfd registered with the ring (the kernel
//!   signals it when deferred completions are queued); [`Driver::run`] waits on it with one
//!   glommio read per batch, not per request.
//! * Read timeouts cost no timer per read: a waiting read stores its deadline in its slot, and
//!   one sweeper per driver, awake only while some read has a deadline, fails the expired ones
//!   every [`READ_TIMEOUT_TICK`] (a glommio timer per read, registered and cancelled for every
//!   request, cost about 2.5 % of a loaded shard's time).
//!
//! # Moving a connection to another shard
//!
//! A connection lives on the driver that accepted it, but it can move: [`UringStream::detach`]
//! takes it out of this driver and [`Driver::adopt`] opens it on another one (the serve loop uses
//! this to hand an upgraded WebSocket to the shard that serves it; see the `server` module docs
//! for why). Only the descriptor and bytes cross threads, never a slot:
//!
//! 1. `detach` cancels the connection's multishot receive (`AsyncCancel`) and waits for its
//!    final completion, the one without `IORING_CQE_F_MORE`. Bytes that arrive before the
//!    cancellation takes effect complete before that final completion, so they are in the
//!    slot's queue by then; anything later stays in the kernel's socket buffer. It also waits
//!    for a send in flight (a send references the slot's buffer and the descriptor).
//! 2. Then nothing on this ring refers to the descriptor any more: `detach` takes the queued
//!    bytes and the descriptor (without closing it), frees the slot (bumping its generation, so
//!    the stream's `Drop` and any stale completion ignore it) and returns both as a
//!    [`crate::server::Detached`].
//! 3. `adopt` opens a slot on the destination driver whose queue starts with those bytes and arms
//!    a new multishot receive, which reads what the kernel buffered meanwhile. Readers see the
//!    bytes in the order they were sent.
//!
//! If the `detach` future is dropped before it finishes, the stream is dropped with it and the
//! connection is closed as any dropped stream is.
//!
//! Everything here runs on the shard's thread; nothing is `Send` (a [`crate::server::Detached`]
//! is: it holds no slot).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use crate::server::Detached;

/// Submission queue entries; the completion queue is twice as large.
pub const RING_ENTRIES: u32 = 4096;
/// Provided receive buffers per shard (a power of two, as the buffer ring requires).
pub const BUF_COUNT: u16 = 1024;
/// Bytes per provided receive buffer.
pub const BUF_BYTES: usize = 4096;
/// Bytes a connection may have received and not yet read; beyond that the connection is failed
/// (the HTTP layer reads everything promptly, so only a misbehaving reader reaches it). It also
/// bounds the bytes [`Driver::adopt`] takes with a connection.
pub const PENDING_BYTES_MAX: usize = 4 * 1024 * 1024;

/// How often the driver looks for reads past their timeout ([`UringStream::set_read_timeout`]),
/// while any read has one: a read times out between its timeout and that plus this tick.
pub const READ_TIMEOUT_TICK: Duration = Duration::from_millis(50);

const BUF_GROUP: u16 = 0;
/// `IORING_ENTER_GETEVENTS`: run deferred task work and post its completions.
const ENTER_GETEVENTS: u32 = 1;

const KIND_ACCEPT: u64 = 1;
const KIND_RECV: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_CANCEL: u64 = 4;

fn user_data(kind: u64, generation: u32, slot: u32) -> u64 {
    (kind << 56) | ((u64::from(generation) & 0x00ff_ffff) << 32) | u64::from(slot)
}

fn split_user_data(data: u64) -> (u64, u32, u32) {
    (data >> 56, ((data >> 32) & 0x00ff_ffff) as u32, data as u32)
}

/// The shard's io_uring network driver. Cheap to clone (a handle).
#[derive(Clone)]
pub struct Driver {
    inner: Rc<RefCell<Inner>>,
}

struct Inner {
    ring: IoUring<squeue::Entry, cqueue::Entry>,
    buffers: BufRing,
    slots: Vec<Slot>,
    free: Vec<u32>,
    listener: TcpListener,
    accepted: VecDeque<RawFd>,
    accept_error: Option<io::Error>,
    accept_armed: bool,
    accept_waker: Option<Waker>,
    /// Entries pushed but not yet submitted.
    dirty: bool,
    flush_waker: Option<Waker>,
    eventfd: RawFd,
    /// The read-timeout sweeper, parked while no read has a deadline.
    sweep_waker: Option<Waker>,
    /// [`Driver::close`] was called: [`Driver::run`] returns.
    closed: bool,
    close_waker: Option<Waker>,
}

struct Slot {
    generation: u32,
    fd: RawFd,
    open: bool,
    /// The stream handle was dropped; the slot is released once no operation is in flight.
    dropped: bool,
    /// [`UringStream::detach`] cancelled the receive and waits for the slot to fall idle; the
    /// slot is then freed without closing the descriptor.
    detaching: bool,
    pending: VecDeque<u8>,
    eof: bool,
    error: Option<i32>,
    recv_armed: bool,
    read_waker: Option<Waker>,
    /// When the read waiting now times out (see [`READ_TIMEOUT_TICK`]).
    read_deadline: Option<Instant>,
    /// The sweeper found `read_deadline` passed; the waiting read fails with `TimedOut`.
    read_timed_out: bool,
    send: Vec<u8>,
    sent: usize,
    send_in_flight: bool,
    send_error: Option<i32>,
    send_waker: Option<Waker>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            generation: 0,
            fd: -1,
            open: false,
            dropped: false,
            detaching: false,
            pending: VecDeque::new(),
            eof: false,
            error: None,
            recv_armed: false,
            read_waker: None,
            read_deadline: None,
            read_timed_out: false,
            send: Vec::new(),
            sent: 0,
            send_in_flight: false,
            send_error: None,
            send_waker: None,
        }
    }
}

/// The provided-buffer ring: `BUF_COUNT` entries in page-aligned memory shared with the kernel,
/// pointing into one allocation of `BUF_COUNT × BUF_BYTES` bytes.
struct BufRing {
    entries: *mut types::BufRingEntry,
    storage: Box<[u8]>,
    tail: u16,
}

impl BufRing {
    fn new() -> io::Result<BufRing> {
        let bytes = usize::from(BUF_COUNT) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: an anonymous private mapping; the result is checked before use.
        let memory = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if memory == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = BufRing {
            entries: memory.cast(),
            storage: vec![0u8; usize::from(BUF_COUNT) * BUF_BYTES].into_boxed_slice(),
            tail: 0,
        };
        for id in 0..BUF_COUNT {
            ring.push(id);
        }
        ring.publish();
        Ok(ring)
    }

    /// Hands buffer `id` (back) to the kernel; visible after [`BufRing::publish`].
    fn push(&mut self, id: u16) {
        let index = usize::from(self.tail & (BUF_COUNT - 1));
        // SAFETY: `index < BUF_COUNT`, the number of entries mapped; only this thread writes
        // entries, and the kernel reads an entry only after the tail covering it is published.
        let entry = unsafe { &mut *self.entries.add(index) };
        // SAFETY: `id < BUF_COUNT`, so the buffer lies inside `storage`.
        let address = unsafe { self.storage.as_mut_ptr().add(usize::from(id) * BUF_BYTES) };
        entry.set_addr(address as u64);
        entry.set_len(BUF_BYTES as u32);
        entry.set_bid(id);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: `entries` is the ring's base, whose first entry's reserved field is the tail.
        let tail = unsafe { types::BufRingEntry::tail(self.entries) } as *mut u16;
        // SAFETY: the tail is a u16 the kernel reads concurrently, hence the atomic release store;
        // the pointer is valid and aligned for the life of the mapping.
        unsafe { std::sync::atomic::AtomicU16::from_ptr(tail) }
            .store(self.tail, std::sync::atomic::Ordering::Release);
    }

    fn bytes(&self, id: u16, len: usize) -> &[u8] {
        let start = usize::from(id) * BUF_BYTES;
        &self.storage[start..start + len.min(BUF_BYTES)]
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        let bytes = usize::from(BUF_COUNT) * std::mem::size_of::<types::BufRingEntry>();
        // SAFETY: unmapping the mapping made in `new`; the ring using it is already gone
        // (`Inner` drops `ring` before `buffers`, in field order).
        unsafe { libc::munmap(self.entries.cast(), bytes) };
    }
}

impl Driver {
    /// Builds the driver for `listener` (which must already listen). Fails if the kernel lacks
    /// what the design needs (Linux 6.1 or later); the caller can fall back to glommio's sockets.
    pub fn new(listener: TcpListener) -> io::Result<Driver> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_defer_taskrun()
            .build(RING_ENTRIES)?;
        let buffers = BufRing::new()?;
        // SAFETY: the buffer ring memory is page aligned (mmap), holds BUF_COUNT entries, and
        // outlives the ring (see `BufRing::drop`).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                buffers.entries as u64,
                BUF_COUNT,
                BUF_GROUP,
                0,
            )?
        };
        // SAFETY: plain syscall; the result is checked.
        let eventfd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if eventfd < 0 {
            return Err(io::Error::last_os_error());
        }
        ring.submitter().register_eventfd(eventfd)?;
        listener.set_nonblocking(true)?;
        Ok(Driver {
            inner: Rc::new(RefCell::new(Inner {
                ring,
                buffers,
                slots: Vec::new(),
                free: Vec::new(),
                listener,
                accepted: VecDeque::new(),
                accept_error: None,
                accept_armed: false,
                accept_waker: None,
                dirty: false,
                flush_waker: None,
                eventfd,
                sweep_waker: None,
                closed: false,
                close_waker: None,
            })),
        })
    }

    /// Drives the ring: submits batched entries and dispatches completions. Spawn it once per
    /// shard; it runs until [`Driver::close`].
    pub async fn run(self) -> io::Result<()> {
        let eventfd = {
            let inner = self.inner.borrow();
            // SAFETY: `dup` of our own descriptor; checked below.
            unsafe { libc::dup(inner.eventfd) }
        };
        if eventfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `eventfd` is a fresh descriptor we own; glommio reads 8-byte counters from it.
        let wakeups = unsafe { glommio::io::BufferedFile::from_raw_fd(eventfd) };
        let completions = async {
            loop {
                // The kernel bumps the eventfd when completions are waiting to be run.
                wakeups
                    .read_at(0, 8)
                    .await
                    .map_err(|error| io::Error::other(error.to_string()))?;
                self.inner.borrow_mut().reap()?;
            }
        };
        let submissions = async {
            loop {
                poll_fn(|cx| {
                    let mut inner = self.inner.borrow_mut();
                    if inner.dirty {
                        Poll::Ready(())
                    } else {
                        inner.flush_waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                })
                .await;
                self.inner.borrow_mut().reap()?;
            }
        };
        // Read timeouts: one timer for the driver, not one per read (see the module docs).
        let sweeper = async {
            loop {
                poll_fn(|cx| {
                    let mut inner = self.inner.borrow_mut();
                    if inner.slots.iter().any(|slot| slot.read_deadline.is_some()) {
                        Poll::Ready(())
                    } else {
                        inner.sweep_waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                })
                .await;
                glommio::timer::sleep(READ_TIMEOUT_TICK).await;
                self.inner.borrow_mut().expire_reads(Instant::now());
            }
        };
        let closed = poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if inner.closed {
                Poll::Ready(Ok(()))
            } else {
                inner.close_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let running = async {
            let result: io::Result<((), ())> = futures_lite::future::try_zip(
                completions,
                futures_lite::future::or(submissions, async {
                    sweeper.await;
                    Ok(())
                }),
            )
            .await;
            result.map(|_| ())
        };
        futures_lite::future::or(closed, running).await
    }

    /// Shuts the driver down: makes [`Driver::run`] return, so the ring, its buffers, the
    /// listener and the descriptors of connections still open are released once the last handle
    /// (driver or stream) is dropped. To stop accepting earlier, while connections finish, call
    /// [`Driver::close_listener`] first.
    /// Operations in flight then never complete: call it once the connections have ended.
    /// `run`'s own glommio handle on the ring's eventfd is closed at the executor's next reactor
    /// pass after `run` returns (a glommio file dropped without `close`): let one happen (a
    /// short sleep) before the executor ends.
    pub fn close(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.closed = true;
        if let Some(waker) = inner.close_waker.take() {
            waker.wake();
        }
    }

    /// Submits what is queued and dispatches the completions that are waiting, now (one
    /// `io_uring_enter`), instead of when the executor next polls the ring's eventfd. For a shard
    /// that is about to yield to its other tasks after a long stretch of work: connections whose
    /// bytes arrived meanwhile become ready before the yielding task runs again.
    pub fn poll(&self) -> io::Result<()> {
        match self.inner.try_borrow_mut() {
            Ok(mut inner) => inner.reap(),
            // Called from inside the driver (cannot happen from a task; be safe anyway).
            Err(_) => Ok(()),
        }
    }

    /// The next accepted connection.
    pub async fn accept(&self) -> io::Result<UringStream> {
        let fd = poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if let Some(fd) = inner.accepted.pop_front() {
                return Poll::Ready(Ok(fd));
            }
            if let Some(error) = inner.accept_error.take() {
                return Poll::Ready(Err(error));
            }
            if !inner.accept_armed {
                let fd = inner.listener.as_raw_fd();
                let entry = opcode::AcceptMulti::new(types::Fd(fd))
                    .build()
                    .user_data(user_data(KIND_ACCEPT, 0, 0));
                inner.push(entry);
                inner.accept_armed = true;
            }
            inner.accept_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Ok(self.open(fd, VecDeque::new()))
    }

    /// Stops listening: the listener leaves its `SO_REUSEPORT` group at once (connections still
    /// in its accept queue are reset, new ones go to the group's other listeners or are refused)
    /// and [`Driver::accept`] fails from then on. The descriptor itself stays open until the
    /// driver goes: a multishot accept may still hold it in the ring. Connections already
    /// accepted are not touched.
    pub fn close_listener(&self) -> io::Result<()> {
        let inner = self.inner.borrow();
        // SAFETY: a plain syscall on the listener we own, open for as long as `inner` is.
        let rc = unsafe { libc::shutdown(inner.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Opens a connection that was accepted elsewhere, typically on another shard's driver and
    /// taken out of it with [`UringStream::detach`] (or out of glommio with
    /// [`crate::server::Transport::detach`]). `received` are bytes already received on it that
    /// nobody has read; reads return them first, then what the socket receives from now on.
    ///
    /// The socket is put in the mode [`Driver::accept`] gives (blocking: io_uring does not need
    /// `O_NONBLOCK`, and glommio's sockets do not use it either), so an adopted stream behaves
    /// like an accepted one. Socket options such as `TCP_NODELAY` are kept.
    ///
    /// Fails (closing the socket) if `received` is longer than [`PENDING_BYTES_MAX`], the most a
    /// connection of this driver may have received and not read, or if the descriptor's flags
    /// cannot be read or set (it is then probably not an open socket).
    pub fn adopt(&self, fd: OwnedFd, received: Vec<u8>) -> io::Result<UringStream> {
        if received.len() > PENDING_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} received bytes, more than a connection may hold unread ({PENDING_BYTES_MAX})",
                    received.len()
                ),
            ));
        }
        set_blocking(&fd)?;
        Ok(self.open(fd.into_raw_fd(), received.into()))
    }

    fn open(&self, fd: RawFd, pending: VecDeque<u8>) -> UringStream {
        let mut inner = self.inner.borrow_mut();
        let index = match inner.free.pop() {
            Some(index) => index,
            None => {
                inner.slots.push(Slot::new());
                (inner.slots.len() - 1) as u32
            }
        };
        let slot = &mut inner.slots[index as usize];
        let generation = slot.generation;
        *slot = Slot {
            generation,
            fd,
            open: true,
            pending,
            ..Slot::new()
        };
        inner.arm_recv(index);
        UringStream {
            inner: self.inner.clone(),
            slot: index,
            generation,
            read_timeout: None,
        }
    }
}

/// Clears `O_NONBLOCK` on `fd` if it is set.
fn set_blocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: F_GETFL on a descriptor we own; no pointer is passed.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::O_NONBLOCK != 0 {
        // SAFETY: F_SETFL on a descriptor we own, with the flags it had minus O_NONBLOCK.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Inner {
    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: every entry we push references memory that outlives the operation: the
        // provided-buffer ring, a slot's send buffer (kept until its completion), or nothing.
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            // The submission queue is full: submit what is there and retry.
            if let Err(error) = self.ring.submit() {
                tracing::error!(%error, "io_uring submit failed");
                break;
            }
        }
        self.dirty = true;
        if let Some(waker) = self.flush_waker.take() {
            waker.wake();
        }
    }

    fn arm_recv(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        if slot.recv_armed || slot.eof || slot.error.is_some() {
            return;
        }
        slot.recv_armed = true;
        let entry = opcode::RecvMulti::new(types::Fd(slot.fd), BUF_GROUP)
            .build()
            .user_data(user_data(KIND_RECV, slot.generation, index));
        self.push(entry);
    }

    /// Asks the kernel to cancel the connection's multishot receive; its final completion (the
    /// one without `F_MORE`) follows, with `-ECANCELED` or with the last bytes it received.
    fn cancel_recv(&mut self, index: u32) {
        let slot = &self.slots[index as usize];
        let target = user_data(KIND_RECV, slot.generation, index);
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data(KIND_CANCEL, slot.generation, index));
        self.push(entry);
    }

    /// Submits pending entries, runs deferred completions, and dispatches them.
    fn reap(&mut self) -> io::Result<()> {
        let to_submit = self.ring.submission().len() as u32;
        self.dirty = false;
        // SAFETY: no argument pointer is passed; flags are a documented constant.
        unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, 0, ENTER_GETEVENTS, None)
        }
        .or_else(|error| match error.raw_os_error() {
            Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) => Ok(0),
            _ => Err(error),
        })?;
        let mut returned = false;
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            returned |= self.complete(cqe);
        }
        if returned {
            self.buffers.publish();
        }
        Ok(())
    }

    /// Handles one completion; returns whether a receive buffer went back to the ring.
    fn complete(&mut self, cqe: cqueue::Entry) -> bool {
        let (kind, generation, index) = split_user_data(cqe.user_data());
        let result = cqe.result();
        let more = cqueue::more(cqe.flags());
        match kind {
            KIND_ACCEPT => {
                if !more {
                    self.accept_armed = false;
                }
                if result >= 0 {
                    self.accepted.push_back(result);
                } else if result != -libc::ECANCELED {
                    self.accept_error = Some(io::Error::from_raw_os_error(-result));
                }
                if let Some(waker) = self.accept_waker.take() {
                    waker.wake();
                }
                false
            }
            KIND_RECV => {
                let buffer = cqueue::buffer_select(cqe.flags());
                if self.slot_mut(index, generation).is_none() {
                    // A completion for a connection that is gone: just recycle the buffer.
                    if let Some(id) = buffer {
                        self.buffers.push(id);
                    }
                    return buffer.is_some();
                }
                let slot = &mut self.slots[index as usize];
                if !more {
                    slot.recv_armed = false;
                }
                match (result, buffer) {
                    (n, Some(id)) if n > 0 => {
                        let bytes = self.buffers.bytes(id, n as usize);
                        if slot.pending.len() + bytes.len() > PENDING_BYTES_MAX {
                            slot.error = Some(libc::ENOBUFS);
                        } else {
                            slot.pending.extend(bytes);
                        }
                        self.buffers.push(id);
                    }
                    (0, _) => slot.eof = true,
                    // Out of provided buffers (the multishot ended; the next read re-arms it),
                    // or our own cancellation.
                    (n, _) if n == -libc::ENOBUFS || n == -libc::ECANCELED => {}
                    (n, _) if n < 0 => slot.error = Some(-n),
                    _ => {}
                }
                if let Some(waker) = slot.read_waker.take() {
                    waker.wake();
                }
                self.release_if_idle(index);
                buffer.is_some()
            }
            KIND_SEND => {
                let Some(slot) = self.slot_mut(index, generation) else {
                    return false;
                };
                slot.send_in_flight = false;
                if result < 0 {
                    slot.send_error = Some(-result);
                } else {
                    slot.sent += result as usize;
                    if slot.sent < slot.send.len() && !slot.dropped {
                        // A short send: submit the rest.
                        self.submit_send(index);
                        return false;
                    }
                }
                let slot = &mut self.slots[index as usize];
                if let Some(waker) = slot.send_waker.take() {
                    waker.wake();
                }
                self.release_if_idle(index);
                false
            }
            KIND_CANCEL => {
                // `-EALREADY`: the receive was running and could not be cancelled at that
                // moment; it may still be armed afterwards, so ask again while someone waits for
                // it to end (a dropped or detaching stream). Other results need nothing: success
                // and `-ENOENT` (it had already ended) are followed by, or came after, the
                // receive's final completion.
                if result == -libc::EALREADY
                    && self
                        .slot_mut(index, generation)
                        .is_some_and(|slot| slot.recv_armed && (slot.dropped || slot.detaching))
                {
                    self.cancel_recv(index);
                }
                false
            }
            _ => false,
        }
    }

    fn slot_mut(&mut self, index: u32, generation: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(index as usize)
            .filter(|slot| slot.open && (slot.generation & 0x00ff_ffff) == generation)
    }

    fn submit_send(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        let rest = &slot.send[slot.sent..];
        slot.send_in_flight = true;
        let entry = opcode::Send::new(types::Fd(slot.fd), rest.as_ptr(), rest.len() as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(KIND_SEND, slot.generation, index));
        self.push(entry);
    }

    /// Fails the waiting reads whose deadline is past `now`.
    fn expire_reads(&mut self, now: Instant) {
        for slot in &mut self.slots {
            if slot.read_deadline.is_some_and(|deadline| deadline <= now) {
                slot.read_deadline = None;
                slot.read_timed_out = true;
                if let Some(waker) = slot.read_waker.take() {
                    waker.wake();
                }
            }
        }
    }

    /// Closes and frees a dropped connection once no operation on it is in flight. A detached
    /// connection is never closed here: its slot was freed (no longer `open`) when its
    /// descriptor was handed out.
    fn release_if_idle(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        if !slot.open || !slot.dropped || slot.recv_armed || slot.send_in_flight {
            return;
        }
        // SAFETY: the descriptor is ours (the slot is open, so it was never handed out) and no
        // operation references it any more.
        unsafe { libc::close(slot.fd) };
        self.free_slot(index);
    }

    /// Returns an idle slot to the free list, forgetting its descriptor (the caller closed it or
    /// handed it out). The generation bump makes the old stream handle and stale completions
    /// miss it.
    fn free_slot(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        slot.open = false;
        slot.dropped = false;
        slot.detaching = false;
        slot.fd = -1;
        slot.pending = VecDeque::new();
        slot.send = Vec::new();
        slot.read_waker = None;
        slot.read_deadline = None;
        slot.read_timed_out = false;
        slot.send_waker = None;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for slot in &self.slots {
            if slot.open {
                // SAFETY: closing descriptors we own, as the driver goes away.
                unsafe { libc::close(slot.fd) };
            }
        }
        for fd in self.accepted.drain(..) {
            // SAFETY: accepted and never handed out.
            unsafe { libc::close(fd) };
        }
        // SAFETY: our eventfd.
        unsafe { libc::close(self.eventfd) };
    }
}

/// One TCP connection on the driver.
pub struct UringStream {
    inner: Rc<RefCell<Inner>>,
    slot: u32,
    generation: u32,
    read_timeout: Option<Duration>,
}

impl UringStream {
    /// Fails reads that wait longer than `timeout` with `TimedOut`.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Sets `TCP_NODELAY`.
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        let fd = self.fd();
        // SAFETY: a plain option on our own socket.
        let socket = unsafe { socket2::Socket::from_raw_fd(fd) };
        let result = socket.set_tcp_nodelay(on);
        let _ = socket.into_raw_fd();
        result
    }

    fn fd(&self) -> RawFd {
        self.inner.borrow().slots[self.slot as usize].fd
    }

    /// Reads what has arrived (at most `buf.len()` bytes); 0 at end of stream. With a read
    /// timeout, fails with `TimedOut` when nothing arrives for that long (see
    /// [`READ_TIMEOUT_TICK`] for the precision).
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = self.read_timeout;
        // Set the first time this call waits; the deadline counts from then.
        let mut armed = false;
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            let index = self.slot;
            let slot = &mut inner.slots[index as usize];
            let ready = if !slot.pending.is_empty() {
                let n = buf.len().min(slot.pending.len());
                let (front, back) = slot.pending.as_slices();
                let first = n.min(front.len());
                buf[..first].copy_from_slice(&front[..first]);
                buf[first..n].copy_from_slice(&back[..n - first]);
                slot.pending.drain(..n);
                Some(Ok(n))
            } else if let Some(code) = slot.error {
                Some(Err(io::Error::from_raw_os_error(code)))
            } else if slot.eof {
                Some(Ok(0))
            } else if armed && slot.read_timed_out {
                Some(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "read timed out",
                )))
            } else {
                None
            };
            if let Some(ready) = ready {
                if armed {
                    slot.read_deadline = None;
                    slot.read_timed_out = false;
                }
                return Poll::Ready(ready);
            }
            slot.read_waker = Some(cx.waker().clone());
            if let Some(timeout) = timeout
                && !armed
            {
                // A deadline or flag left by a read dropped while it waited is replaced here.
                armed = true;
                slot.read_timed_out = false;
                slot.read_deadline = Some(Instant::now() + timeout);
                if let Some(waker) = inner.sweep_waker.take() {
                    waker.wake();
                }
            }
            if !inner.slots[index as usize].recv_armed {
                inner.arm_recv(index);
            }
            Poll::Pending
        })
        .await
    }

    /// Writes all of `buf`.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        {
            let mut inner = self.inner.borrow_mut();
            let slot = &mut inner.slots[self.slot as usize];
            debug_assert!(!slot.send_in_flight, "one write at a time per stream");
            if let Some(code) = slot.send_error {
                return Err(io::Error::from_raw_os_error(code));
            }
            slot.send.clear();
            slot.send.extend_from_slice(buf);
            slot.sent = 0;
            inner.submit_send(self.slot);
        }
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            let slot = &mut inner.slots[self.slot as usize];
            if slot.send_in_flight {
                slot.send_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            if let Some(code) = slot.send_error {
                return Poll::Ready(Err(io::Error::from_raw_os_error(code)));
            }
            Poll::Ready(Ok(()))
        })
        .await
    }

    /// Shuts down the write side (the peer reads end of stream).
    pub fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: plain syscall on our socket.
        if unsafe { libc::shutdown(self.fd(), libc::SHUT_WR) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Takes the connection out of this driver without closing it: cancels the multishot
    /// receive and waits for its final completion, waits for a send in flight, then returns the
    /// socket and the bytes received but not read (in order) and frees the slot. Give them to
    /// [`Driver::adopt`] (on any shard) to go on with the connection. See the module docs.
    ///
    /// Fails, closing the connection, if the connection already failed (a receive or send
    /// error, or more than [`PENDING_BYTES_MAX`] unread bytes). An end of stream from the peer
    /// is not a failure: the adopting driver sees it again. Dropping the future before it
    /// finishes closes the connection.
    pub async fn detach(self) -> io::Result<Detached> {
        let index = self.slot;
        {
            let mut inner = self.inner.borrow_mut();
            let slot = &mut inner.slots[index as usize];
            slot.detaching = true;
            if slot.recv_armed {
                inner.cancel_recv(index);
            }
        }
        poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            let slot = &mut inner.slots[index as usize];
            if slot.recv_armed {
                slot.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            if slot.send_in_flight {
                slot.send_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(())
        })
        .await;
        let detached = {
            let mut inner = self.inner.borrow_mut();
            let slot = &mut inner.slots[index as usize];
            match slot.error.or(slot.send_error) {
                // Dropping `self` below closes the connection.
                Some(code) => Err(io::Error::from_raw_os_error(code)),
                None => {
                    let received = Vec::from(std::mem::take(&mut slot.pending));
                    // SAFETY: the slot is open, so its descriptor is open and owned by it alone;
                    // no operation on the ring references it any more (the receive ended and no
                    // send is in flight), and `free_slot` below makes the slot forget it, so
                    // neither `release_if_idle`, this stream's `Drop` nor `Inner::drop` closes
                    // it: the `OwnedFd` is its only owner.
                    let fd = unsafe { OwnedFd::from_raw_fd(slot.fd) };
                    inner.free_slot(index);
                    Ok(Detached { fd, received })
                }
            }
        };
        // With the slot freed, its generation no longer matches ours and `Drop` does nothing.
        drop(self);
        detached
    }
}

impl AsRawFd for UringStream {
    /// The connection's socket, for options and `shutdown(2)`. It stays open while the stream
    /// lives; do not close it (the driver does, once nothing on the ring refers to it).
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}

impl Drop for UringStream {
    fn drop(&mut self) {
        let mut inner = self.inner.borrow_mut();
        let index = self.slot;
        let slot = &mut inner.slots[index as usize];
        if !slot.open || slot.generation != self.generation {
            return;
        }
        slot.dropped = true;
        slot.read_waker = None;
        slot.send_waker = None;
        // A detach that was abandoned half-way already asked for the cancellation.
        if slot.recv_armed && !slot.detaching {
            inner.cancel_recv(index);
        }
        inner.release_if_idle(index);
    }
}
