//! The open-file limit: every connection is a socket, so thousands of WebSockets need more
//! than the usual soft limit of 1024.

use std::io;

/// Descriptors an executor uses besides its sockets (io_uring rings, eventfds, timers), with
/// room to spare.
pub(crate) const OVERHEAD_FDS_PER_THREAD: u64 = 16;
/// Descriptors the process uses besides the executors (stdio, the main thread's sockets, …).
const BASE_FDS: u64 = 64;

/// Makes sure `sockets` more descriptors can be opened: raises the soft RLIMIT_NOFILE to the
/// hard limit when it is too low. Returns `(old, new)` soft limits when it raised it; an error
/// naming `what` when even the hard limit is too low.
pub(crate) fn ensure_open_files(sockets: u64, what: &str) -> Result<Option<(u64, u64)>, String> {
    let needed = sockets + BASE_FDS;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` that outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        // Cannot tell; the connects will say so if descriptors run out.
        return Ok(None);
    }
    let (soft, hard) = (limit.rlim_cur, limit.rlim_max);
    if soft == libc::RLIM_INFINITY || soft >= needed {
        return Ok(None);
    }
    if hard != libc::RLIM_INFINITY && hard < needed {
        return Err(format!(
            "{what} needs about {needed} open files, but the hard limit (RLIMIT_NOFILE) is \
             {hard}; raise it (`ulimit -Hn`, /etc/security/limits.conf, systemd LimitNOFILE) \
             or use fewer connections"
        ));
    }
    let raised = if hard == libc::RLIM_INFINITY {
        needed
    } else {
        hard
    };
    limit.rlim_cur = raised;
    // SAFETY: `limit` is a valid `rlimit` with a soft limit not above the hard one.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(format!(
            "{what} needs about {needed} open files, but the soft limit (RLIMIT_NOFILE) is \
             {soft} and raising it to {raised} failed: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(Some((soft, raised)))
}
