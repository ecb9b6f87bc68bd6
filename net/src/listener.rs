//! SO_REUSEPORT listeners: every shard binds its own listening socket on the same address and the
//! kernel spreads incoming connections across them, so no shard hands connections to another
//! and accepting needs no cross-core coordination.

use std::io;
use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::os::unix::io::FromRawFd;

use socket2::{Domain, Protocol, Socket, Type};

/// A non-blocking-agnostic std `TcpListener` bound with SO_REUSEADDR + SO_REUSEPORT (socket2),
/// listening with `backlog`, so every shard can bind its own listener on the same address.
///
/// The socket is left in blocking mode: glommio accepts through io_uring, which does not need
/// `O_NONBLOCK`, and a caller that wants a plain std listener can use it as is. SO_REUSEADDR lets
/// a restarted server bind while old connections sit in TIME_WAIT. For an IPv6 address the
/// socket keeps the system's default `IPV6_V6ONLY` setting.
pub fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// Binds a [`reuseport_listener`] and hands it to the current glommio executor.
///
/// # Panics
///
/// Panics when called outside a glommio executor, because glommio attaches the socket to the
/// executor's reactor (a programming error, not something input can cause).
pub fn reuseport_glommio_listener(
    addr: SocketAddr,
    backlog: i32,
) -> io::Result<glommio::net::TcpListener> {
    let std_listener = reuseport_listener(addr, backlog)?;
    let fd = std_listener.into_raw_fd();
    // SAFETY: `fd` was just released by `into_raw_fd`, so it is an open, bound and listening TCP
    // socket that nothing else owns or will close; glommio's listener takes sole ownership of it.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(fd) })
}
