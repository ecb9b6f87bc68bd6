//! Where the load's connections run: on glommio (the default), or (`--busy-poll`) each on its own
//! OS thread that spins on a nonblocking socket.
//!
//! The connection loops of [`crate::shard`] and [`crate::wsload`] are written once, against
//! [`Socket`]: glommio's `TcpStream` parks the executor while it waits (waking a parked vCPU
//! costs tens of microseconds on a VM, which a round trip of ~20 µs then carries), while
//! [`BusySocket`] never waits: its reads are `recv(MSG_DONTWAIT)` and its pending futures are
//! polled again at once by [`block_on`], so a response is seen within one `recv` of its arrival.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::{AsyncRead, AsyncWrite};

/// Most connections `--busy-poll` runs: each one spins a whole core.
pub(crate) const BUSY_POLL_CONNECTIONS_MAX: u32 = 16;

/// A client TCP socket and the runtime it runs on.
pub(crate) trait Socket: AsyncRead + AsyncWrite + AsRawFd + Unpin + Sized + 'static {
    /// Connects to `addr` within `timeout`, with TCP_NODELAY.
    fn connect(addr: SocketAddr, timeout: Duration) -> impl Future<Output = io::Result<Self>>;

    /// Waits for `duration`.
    fn sleep(duration: Duration) -> impl Future<Output = ()>;

    /// Runs `task` alongside the caller until the returned future is awaited (to wait for its
    /// end) or dropped (to cancel it). A busy-polling thread runs one connection, so there the
    /// task only runs while it is awaited.
    fn spawn(task: impl Future<Output = ()> + 'static) -> impl Future<Output = ()>;
}

impl Socket for glommio::net::TcpStream {
    async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = glommio::net::TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(io::Error::from)?;
        stream.set_nodelay(true).map_err(io::Error::from)?;
        Ok(stream)
    }

    fn sleep(duration: Duration) -> impl Future<Output = ()> {
        glommio::timer::sleep(duration)
    }

    fn spawn(task: impl Future<Output = ()> + 'static) -> impl Future<Output = ()> {
        glommio::spawn_local(task)
    }
}

/// A nonblocking TCP_NODELAY socket whose reads and writes never wait: `Poll::Pending` means
/// "nothing yet, ask again" and registers no waker (see [`block_on`]).
#[derive(Debug)]
pub(crate) struct BusySocket(std::net::TcpStream);

impl AsRawFd for BusySocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.as_raw_fd()
    }
}

/// A `recv` or `send` result as a poll: `EAGAIN` (and `EINTR`) are "not yet".
fn poll_result(result: isize) -> Poll<io::Result<usize>> {
    if let Ok(count) = usize::try_from(result) {
        return Poll::Ready(Ok(count));
    }
    let error = io::Error::last_os_error();
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Poll::Pending,
        _ => Poll::Ready(Err(error)),
    }
}

impl AsyncRead for BusySocket {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let (fd, flags) = (self.0.as_raw_fd(), libc::MSG_DONTWAIT);
        // SAFETY: `fd` is this socket's, open while `self` lives, and `buf` is valid for writes
        // of `buf.len()` bytes for the duration of the call.
        poll_result(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) })
    }
}

impl AsyncWrite for BusySocket {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let (fd, flags) = (self.0.as_raw_fd(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
        // SAFETY: `fd` is this socket's, open while `self` lives, and `buf` is valid for reads
        // of `buf.len()` bytes for the duration of the call.
        poll_result(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), flags) })
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.0.shutdown(std::net::Shutdown::Write))
    }
}

impl Socket for BusySocket {
    /// A blocking connect (setup, not measured), then nonblocking.
    async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(BusySocket(stream))
    }

    /// Spins until `duration` has passed.
    fn sleep(duration: Duration) -> impl Future<Output = ()> {
        let until = Instant::now() + duration;
        std::future::poll_fn(move |_| {
            if Instant::now() >= until {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }

    fn spawn(task: impl Future<Output = ()> + 'static) -> impl Future<Output = ()> {
        task
    }
}

/// Runs `future` on this thread, polling it again as soon as it is pending: no waker, no
/// sleeping, no epoll. It burns the core it runs on.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut context = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn busy_sleep_waits_without_a_runtime() {
        let start = Instant::now();
        block_on(BusySocket::sleep(Duration::from_millis(5)));
        assert!(start.elapsed() >= Duration::from_millis(5));
    }

    #[test]
    fn busy_socket_round_trip() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            std::io::Read::read_exact(&mut peer, &mut buf).unwrap();
            std::io::Write::write_all(&mut peer, &buf).unwrap();
        });
        let got = block_on(async {
            let mut socket = BusySocket::connect(addr, Duration::from_secs(5)).await?;
            let mut buf = [0u8; 5];
            // The peer sends nothing before it has our 5 bytes: "not yet", at once.
            let early = std::future::poll_fn(|cx| {
                Poll::Ready(Pin::new(&mut socket).poll_read(cx, &mut buf).is_pending())
            });
            assert!(early.await);
            socket.write_all(b"hello").await?;
            socket.read_exact(&mut buf).await?;
            // The peer closed: a read returns 0, not "pending" forever.
            let end = socket.read(&mut buf).await?;
            io::Result::Ok((buf, end))
        })
        .unwrap();
        echo.join().unwrap();
        assert_eq!(got, (*b"hello", 0));
    }

    #[test]
    fn failures_are_errors() {
        assert!(matches!(poll_result(3), Poll::Ready(Ok(3))));
        // SAFETY: a recv on an invalid descriptor only sets errno (EBADF).
        let result = unsafe { libc::recv(-1, std::ptr::null_mut(), 0, libc::MSG_DONTWAIT) };
        assert!(matches!(poll_result(result), Poll::Ready(Err(_))));
    }
}
