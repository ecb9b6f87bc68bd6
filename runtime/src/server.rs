//! Starting and stopping a server: one pinned glommio executor per shard, each with its own
//! SO_REUSEPORT listener on the same address.

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use pinion_net::server::{Detached, Transport, WsLimits, WsSession};
use pinion_storage::{LogStore, MemoryStore, Store};

use crate::config::{Config, NetDriver};
use crate::mailbox::{self, Postman};
use crate::protocol::Gateway;
use crate::registry::Registry;
use crate::shard::{Adopter, Shard};
use crate::sys;

/// Connections waiting in a listener's accept queue, per shard.
const LISTEN_BACKLOG: i32 = 1024;

/// A running server. Dropping it does not stop it; call [`Server::stop`].
pub struct Server {
    addr: SocketAddr,
    postman: Postman,
    executors: Vec<ExecutorJoinHandle<()>>,
}

impl Server {
    /// Starts every shard and returns once all of them listen.
    pub fn start(registry: Registry, mut config: Config) -> io::Result<Server> {
        config.base_path = normalise_base_path(&config.base_path)?;
        let cpus = allowed_cpus()?;
        let shard_count = config.shards.unwrap_or(cpus.len());
        if shard_count == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "--shards must be at least 1",
            ));
        }
        if let Some(dir) = &config.data_dir {
            std::fs::create_dir_all(dir).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot create data dir {}: {error}", dir.display()),
                )
            })?;
        }

        // Bind every listener before any shard runs, so that the port (also a port-0 pick) is
        // shared and the server accepts connections as soon as `start` returns.
        let first = pinion_net::listener::reuseport_listener(config.listen, LISTEN_BACKLOG)?;
        let addr = first.local_addr()?;
        let mut listeners = vec![first];
        for _ in 1..shard_count {
            listeners.push(pinion_net::listener::reuseport_listener(
                addr,
                LISTEN_BACKLOG,
            )?);
        }

        let (mailboxes, postman) = mailbox::wire(shard_count);
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let mut executors = Vec::with_capacity(shard_count);
        for (index, (listener, mailbox)) in listeners.into_iter().zip(mailboxes).enumerate() {
            let cpu = cpus[index % cpus.len()];
            let registry = registry.clone();
            let config = config.clone();
            let postman = postman.clone();
            let ready_tx = ready_tx.clone();
            let fd = listener.into_raw_fd();
            let mut builder =
                LocalExecutorBuilder::new(Placement::Fixed(cpu)).name(&format!("shard-{index}"));
            if !config.spin_before_park.is_zero() {
                builder = builder.spin_before_park(config.spin_before_park);
            }
            let executor = builder
                .spawn(move || async move {
                    let config = Rc::new(config);
                    let store = match open_store(&config, index, shard_count).await {
                        Ok(store) => match config.wrap_store {
                            Some(wrap) => wrap(store),
                            None => store,
                        },
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    if let Some(hook) = config.after_store_open {
                        hook();
                    }
                    let shard = Shard::new(index, config, &registry, postman, mailbox, store);
                    sys::spawn(shard.clone().run_timers());
                    // SAFETY: `fd` is a listening socket we own (from `into_raw_fd` above) and
                    // nothing else holds it.
                    let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
                    let listener = Listener::new(listener, shard.config.net_driver, index);
                    let sockets = Rc::new(OpenSockets::default());
                    shard.set_adopter(listener.adopter(sockets.clone()));
                    if let Listener::Uring(driver) = &listener {
                        let driver = driver.clone();
                        shard.set_io_poller(Box::new(move || {
                            if let Err(error) = driver.poll() {
                                tracing::warn!(%error, "polling the network driver failed");
                            }
                        }));
                    }
                    if let Some(interval) = shard.config.ws_heartbeat {
                        sys::spawn(crate::realtime::Heartbeats::run(shard.clone(), interval));
                    }
                    let gateway = Rc::new(Gateway {
                        shard: shard.clone(),
                    });
                    let _ = ready_tx.send(Ok(()));
                    // The mailbox is served until the stop has drained the connections, so that
                    // requests in flight still get other shards' replies.
                    let serve = async {
                        let accept = accept_loop(&listener, gateway, shard.clone(), &sockets);
                        futures_lite::future::or(accept, shard.stop_requested()).await;
                        drain(&shard, listener, &sockets).await;
                        shard.close_mailbox();
                    };
                    futures_lite::future::zip(serve, shard.clone().run_mailbox()).await;
                    tracing::debug!(shard = index, "saving every changed actor");
                    futures_lite::future::or(shard.save_all(), async {
                        shard.refuse_mail_while_saving().await;
                        std::future::pending().await
                    })
                    .await;
                    if let Some(stats) = shard.store.stats() {
                        tracing::info!(
                            shard = index,
                            appends = stats.appends,
                            batches = stats.batches,
                            syncs = stats.syncs,
                            bytes_written = stats.bytes_written,
                            admission_waits = stats.admission_waits,
                            gathers = stats.gathers,
                            prefill_bytes = stats.prefill_bytes,
                            prefill_failures = stats.prefill_failures,
                            segments_created = stats.segments_created,
                            spares_created = stats.spares_created,
                            spare_failures = stats.spare_failures,
                            cached_reads = stats.cached_reads,
                            ring_reads = stats.ring_reads,
                            compactions = stats.compactions,
                            segments = stats.segments,
                            "store at stop"
                        );
                    }
                    for (wakes, message) in [
                        (&shard.wakes, "wakes at stop"),
                        (
                            &shard.device_wakes,
                            "wakes that read from the device, at stop",
                        ),
                    ] {
                        let wakes = wakes.borrow();
                        if !wakes.is_empty() {
                            tracing::info!(
                                shard = index,
                                count = wakes.len(),
                                p50_us = wakes.value_at_quantile(0.5),
                                p99_us = wakes.value_at_quantile(0.99),
                                max_us = wakes.max(),
                                "{message}"
                            );
                        }
                    }
                    if let Err(error) = shard.store.close().await {
                        tracing::error!(%error, shard = index, "closing the store failed");
                    }
                    // Tasks still pending (timers, hooks waiting on a gate) would hold the shard
                    // forever: a process that starts servers again would leak each one.
                    sys::cancel_spawned().await;
                    shard.refuse_mail();
                    // The shard's last owner: dropping it queues the closes of the files its
                    // store still holds (glommio closes a dropped file at its next reactor
                    // pass), and the sleep makes that pass before the executor ends.
                    drop(shard);
                    sys::sleep(Duration::from_millis(1)).await;
                })
                .map_err(|error| {
                    io::Error::other(format!("cannot start shard {index} on CPU {cpu}: {error}"))
                })?;
            executors.push(executor);
        }
        drop(ready_tx);
        for _ in 0..shard_count {
            match ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(result) => result?,
                Err(_) => return Err(io::Error::other("a shard did not start within 10 s")),
            }
        }
        Ok(Server {
            addr,
            postman,
            executors,
        })
    }

    /// The address every shard listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shard_count(&self) -> usize {
        self.executors.len()
    }

    /// Stops every shard and waits for their threads to end. Each shard:
    ///
    /// 1. stops listening (a new connection is refused, or reset if it was still queued);
    /// 2. sends every WebSocket a 1001 close (going away) and waits for them to close;
    /// 3. ends every HTTP connection once the request it is handling, if any, is answered
    ///    (with `connection: close`);
    /// 4. ends whatever is still open once [`Config::stop_grace`] has passed since the stop;
    /// 5. saves every changed actor and closes its store.
    pub fn stop(self) -> io::Result<()> {
        self.postman.stop_all();
        for executor in self.executors {
            executor
                .join()
                .map_err(|error| io::Error::other(format!("a shard failed: {error}")))?;
        }
        Ok(())
    }
}

/// The shard's store: the durable log under `--data-dir`, or memory without one.
async fn open_store(
    config: &Config,
    index: usize,
    shard_count: usize,
) -> io::Result<Rc<dyn Store>> {
    let Some(dir) = &config.data_dir else {
        return Ok(Rc::new(MemoryStore::new()));
    };
    let store = LogStore::open(dir, index, shard_count, config.store.clone()).await?;
    let recovered = store.recovered();
    tracing::info!(
        shard = index,
        actors = recovered.live_actors,
        schedules = recovered.schedules,
        records = recovered.records,
        elapsed_ms = recovered.elapsed.as_millis() as u64,
        "store recovered"
    );
    if let Some(torn) = &recovered.torn_tail {
        tracing::warn!(
            shard = index,
            ?torn,
            "the log ended in a torn write; it was cut off"
        );
    }
    Ok(Rc::new(store))
}

/// A shard's listening socket, on the configured driver.
enum Listener {
    Uring(pinion_net::uring::Driver),
    Glommio(glommio::net::TcpListener),
}

impl Listener {
    fn new(listener: std::net::TcpListener, driver: NetDriver, shard: usize) -> Listener {
        if driver == NetDriver::Uring {
            match listener
                .try_clone()
                .and_then(pinion_net::uring::Driver::new)
            {
                Ok(driver) => {
                    let runner = driver.clone();
                    sys::spawn(async move {
                        if let Err(error) = runner.run().await {
                            tracing::error!(%error, shard, "the io_uring network driver failed");
                        }
                    });
                    return Listener::Uring(driver);
                }
                Err(error) => {
                    tracing::warn!(%error, shard, "io_uring network driver unavailable; using glommio sockets");
                }
            }
        }
        // SAFETY: the descriptor is a listening socket we own; glommio takes it over.
        Listener::Glommio(unsafe { glommio::net::TcpListener::from_raw_fd(listener.into_raw_fd()) })
    }
}

impl Listener {
    /// How this shard serves a WebSocket another shard moved here: on the same driver as the
    /// connections it accepts itself.
    fn adopter(&self, sockets: Rc<OpenSockets>) -> Adopter {
        match self {
            Listener::Uring(driver) => {
                let driver = driver.clone();
                Box::new(move |socket: Detached, mut session: Box<dyn WsSession>| {
                    match driver.adopt(socket.fd, Vec::new()) {
                        Ok(stream) => serve_websocket(stream, socket.received, session, &sockets),
                        Err(error) => {
                            tracing::warn!(%error, "cannot adopt a WebSocket");
                            session.on_close(None);
                        }
                    }
                })
            }
            Listener::Glommio(_) => {
                Box::new(move |socket: Detached, session: Box<dyn WsSession>| {
                    // SAFETY: the descriptor is a connected TCP socket we own (`Detached` gave
                    // it to us); glommio takes it over.
                    let stream =
                        unsafe { glommio::net::TcpStream::from_raw_fd(socket.fd.into_raw_fd()) };
                    serve_websocket(stream, socket.received, session, &sockets)
                })
            }
        }
    }

    /// Stops listening (see [`pinion_net::uring::Driver::close_listener`]); returns our
    /// driver, to be closed once the connections have ended.
    fn close(self, shard: usize) -> Option<pinion_net::uring::Driver> {
        match self {
            Listener::Uring(driver) => {
                if let Err(error) = driver.close_listener() {
                    tracing::warn!(%error, shard, "closing the listener failed");
                }
                Some(driver)
            }
            // Closes the descriptor (glommio's accept, dropped with the accept loop, no longer
            // polls it).
            Listener::Glommio(listener) => {
                drop(listener);
                None
            }
        }
    }
}

fn serve_websocket<T: Transport + AsRawFd + 'static>(
    stream: T,
    received: Vec<u8>,
    session: Box<dyn WsSession>,
    sockets: &Rc<OpenSockets>,
) {
    let open = sockets.track(stream.as_raw_fd());
    sys::spawn(async move {
        let limits = WsLimits::default();
        if let Err(error) =
            pinion_net::server::serve_websocket(stream, received, session, &limits).await
        {
            tracing::debug!(%error, "WebSocket ended with an error");
        }
        drop(open);
    });
}

async fn accept_loop(
    listener: &Listener,
    gateway: Rc<Gateway>,
    shard: Rc<Shard>,
    sockets: &Rc<OpenSockets>,
) {
    let limits = Rc::new(shard.config.http.clone());
    let read_timeout = shard.config.read_timeout;
    loop {
        let accepted =
            match listener {
                Listener::Uring(driver) => driver.accept().await.map(|mut stream| {
                    // Small responses must not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    stream.set_read_timeout(Some(read_timeout));
                    serve_detached(stream, gateway.clone(), limits.clone(), sockets);
                }),
                Listener::Glommio(listener) => listener
                    .accept()
                    .await
                    .map_err(io::Error::from)
                    .map(|stream| {
                        let _ = stream.set_nodelay(true);
                        let _ = stream.set_read_timeout(Some(read_timeout));
                        serve_detached(stream, gateway.clone(), limits.clone(), sockets);
                    }),
            };
        if let Err(error) = accepted {
            // Typically EMFILE: back off instead of spinning on a full descriptor table.
            tracing::warn!(%error, shard = shard.index, "accept failed");
            sys::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn serve_detached<T: Transport + AsRawFd + 'static>(
    stream: T,
    gateway: Rc<Gateway>,
    limits: Rc<pinion_net::http::Limits>,
    sockets: &Rc<OpenSockets>,
) {
    let open = sockets.track(stream.as_raw_fd());
    sys::spawn(async move {
        if let Err(error) = pinion_net::server::serve(stream, &*gateway, &limits).await {
            tracing::debug!(%error, "connection ended with an error");
        }
        drop(open);
    });
}

/// Stops a shard's serving (see [`Server::stop`]): closes the listener, closes the WebSockets
/// with 1001, lets the requests in flight finish (HTTP requests, and calls from other shards),
/// and ends every connection left once `stop_grace` has passed. Polls the counts every
/// millisecond: a stop is rare, and nothing on a request's path has to signal it.
async fn drain(shard: &Shard, listener: Listener, sockets: &OpenSockets) {
    const POLL: Duration = Duration::from_millis(1);
    let deadline = sys::now() + shard.config.stop_grace;
    let driver = listener.close(shard.index);
    let websockets = shard
        .heartbeats
        .close_all(CLOSE_GOING_AWAY, "server stopping");
    let (connections, requests) = (sockets.len(), shard.requests_in_flight());
    if connections > 0 || requests > 0 {
        // A stop may take up to the grace: say what it waits for.
        tracing::info!(
            shard = shard.index,
            websockets,
            connections,
            requests,
            grace_ms = shard.config.stop_grace.as_millis() as u64,
            "stopped listening; closing the connections"
        );
    }
    // WebSockets first: ending a socket's reading would cut its closing handshake short. A
    // session lives until its peer has closed the TCP connection too (or the 2 s linger gave
    // up), so this waits for the handshakes.
    while shard.heartbeats.live() > 0 && sys::now() < deadline {
        sys::sleep(POLL).await;
    }
    // Every connection left reads end-of-stream now: an idle one ends at once, one with a
    // request in flight once its response is written. Calls from other shards have no
    // connection here; they are waited for too.
    sockets.shutdown_all(libc::SHUT_RD);
    while (sockets.len() > 0 || shard.requests_in_flight() > 0) && sys::now() < deadline {
        sys::sleep(POLL).await;
    }
    let left = sockets.shutdown_all(libc::SHUT_RDWR);
    if left > 0 || shard.requests_in_flight() > 0 {
        tracing::warn!(
            shard = shard.index,
            connections = left,
            requests = shard.requests_in_flight(),
            grace_ms = shard.config.stop_grace.as_millis() as u64,
            "connections still busy after the stop grace were ended"
        );
    }
    // Nothing is served any more: release the network driver (its ring, buffers and
    // descriptors), which the shard's hooks into it would otherwise keep alive (glommio never
    // drops the pending tasks that hold the shard).
    shard.release_network();
    if let Some(driver) = driver {
        driver.close();
        // One reactor pass after the driver's task ends, which closes its last descriptor.
        sys::sleep(POLL).await;
    }
    tracing::debug!(shard = shard.index, "stopped serving");
}

/// The WebSocket close code for a server going away (RFC 6455 §7.4.1).
const CLOSE_GOING_AWAY: u16 = 1001;

/// The connected sockets a shard serves, so that a stop can end them: a connection task that
/// never finishes (the executor stops with it pending) would otherwise keep its socket open,
/// and its peer waiting, until the process exits. A slot is taken when the connection starts
/// and given back when its task ends, before the descriptor can be reused.
#[derive(Default)]
struct OpenSockets {
    fds: RefCell<sys::Slab<RawFd>>,
}

impl OpenSockets {
    fn track(self: &Rc<Self>, fd: RawFd) -> OpenSocket {
        OpenSocket {
            index: self.fds.borrow_mut().insert(fd),
            sockets: self.clone(),
        }
    }

    fn len(&self) -> usize {
        self.fds.borrow().len()
    }

    /// `shutdown(2)` with `how` on every tracked socket; returns how many there were.
    fn shutdown_all(&self, how: libc::c_int) -> usize {
        let fds = self.fds.borrow();
        for &fd in fds.iter() {
            // SAFETY: a plain syscall on an open descriptor: its connection task has not ended.
            // The task gives the slot back when it ends, in the same synchronous step as the
            // stream's close, so no stop runs between the two.
            unsafe { libc::shutdown(fd, how) };
        }
        fds.len()
    }
}

/// A connection's slot in [`OpenSockets`]; dropping it gives the slot back.
struct OpenSocket {
    sockets: Rc<OpenSockets>,
    index: usize,
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.sockets.fds.borrow_mut().remove(self.index);
    }
}

fn normalise_base_path(base: &str) -> io::Result<String> {
    let trimmed = base.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".into());
    }
    if !trimmed.starts_with('/') || trimmed.contains(['?', '#', ' ']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the base path must look like /api/rivet, not {base:?}"),
        ));
    }
    Ok(trimmed.to_string())
}

/// The CPUs this process may run on (its affinity mask, which `taskset` sets).
fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: `cpu_set_t` is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: we pass the size of `set`, which the kernel fills.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `set` was filled by sched_getaffinity; CPU_ISSET reads it within CPU_SETSIZE.
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    if cpus.is_empty() {
        return Err(io::Error::other("the process may run on no CPU"));
    }
    Ok(cpus)
}

/// Blocks SIGINT and SIGTERM in the calling thread and in every thread it starts afterwards, so
/// that [`wait_for_shutdown_signal`] can take them synchronously. Call it first thing in `main`.
pub fn block_shutdown_signals() -> io::Result<()> {
    let set = shutdown_signals();
    // SAFETY: `set` is an initialised sigset; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits until SIGINT or SIGTERM arrives; returns its name.
pub fn wait_for_shutdown_signal() -> io::Result<&'static str> {
    let set = shutdown_signals();
    let mut signal: libc::c_int = 0;
    // SAFETY: `set` is initialised and `signal` is a valid out pointer.
    let rc = unsafe { libc::sigwait(&set, &mut signal) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(if signal == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    })
}

fn shutdown_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the set before sigaddset reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}
