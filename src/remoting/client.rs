//! One multiplexed TCP connection per peer, with many requests in flight.
//!
//! A [`Client`] owns at most one live connection to its address. Requests are
//! written by a writer task (which coalesces whatever is queued into one
//! write) and answered through a table `opaque → waiting request` that the
//! reader task fills as responses arrive, in any order. Every request has a
//! deadline that covers connecting too. When the socket fails, every waiting
//! request gets the error at once and the next request reconnects.
//!
//! A [`Pool`] hands out one `Client` per address, so callers above this layer
//! name peers by address and never see a socket.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::codes::response;
use super::frame::{self, Command, Decoded};
use super::{AclCredentials, Error};

/// Settings shared by every connection of a pool.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Used by [`Client::invoke`] when the caller gives no timeout. Covers
    /// connecting, writing and waiting for the response.
    pub request_timeout: Duration,
    /// Sign every request with these ACL 1.0 credentials when set.
    pub acl: Option<AclCredentials>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            acl: None,
        }
    }
}

/// A response waiter: the reader task completes it, or the connection's
/// failure does.
type Waiter = oneshot::Sender<Result<Command, Error>>;

/// A client for one peer address. Cheap to share behind an `Arc`.
pub struct Client {
    addr: String,
    options: ClientOptions,
    /// The live connection, if any. A plain mutex: held only to clone the Arc.
    current: Mutex<Option<Arc<Connection>>>,
    /// Serialises connection attempts so a burst of requests dials once.
    connecting: tokio::sync::Mutex<()>,
    /// Next request id. Java starts at 0 too; wrapping is harmless because
    /// ids only need to be unique among requests in flight.
    next_opaque: AtomicI32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("addr", &self.addr).finish()
    }
}

impl Client {
    /// A client for `addr` (`host:port`). Does not connect until first used.
    pub fn new(addr: impl Into<String>, options: ClientOptions) -> Client {
        Client {
            addr: addr.into(),
            options,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            next_opaque: AtomicI32::new(0),
        }
    }

    /// The peer address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send a request and wait for its response, within the default timeout.
    ///
    /// # Errors
    /// `Timeout`, `Io` or `Protocol`; a response with a failure code is *not*
    /// an error here (the admin layer decides what each code means).
    pub async fn invoke(&self, request: Command) -> Result<Command, Error> {
        self.invoke_timeout(request, self.options.request_timeout)
            .await
    }

    /// Send a request and wait for its response within `timeout`.
    ///
    /// # Errors
    /// As [`Client::invoke`].
    pub async fn invoke_timeout(
        &self,
        mut request: Command,
        timeout: Duration,
    ) -> Result<Command, Error> {
        let deadline = Instant::now() + timeout;
        let code = request.code;
        let connection = self.connection(deadline, timeout).await?;
        let opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        request.opaque = opaque;
        if let Some(acl) = &self.options.acl {
            acl.sign(&mut request);
        }
        let bytes = request.to_bytes()?;
        let (waiter, response) = oneshot::channel();
        connection.shared.register(opaque, waiter)?;
        if connection.outbound.send(bytes).is_err() {
            connection.shared.forget(opaque);
            return Err(connection.shared.closed_error());
        }
        match tokio::time::timeout_at(deadline, response).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(connection.shared.closed_error()),
            Err(_) => {
                connection.shared.forget(opaque);
                Err(Error::Timeout {
                    addr: self.addr.clone(),
                    what: format!("response to request code {code}"),
                    after: timeout,
                })
            }
        }
    }

    /// Send a request that expects no response.
    ///
    /// # Errors
    /// `Timeout` or `Io` when the connection cannot be made.
    pub async fn invoke_oneway(&self, mut request: Command) -> Result<(), Error> {
        let timeout = self.options.request_timeout;
        let connection = self.connection(Instant::now() + timeout, timeout).await?;
        request.opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        request.set_oneway();
        if let Some(acl) = &self.options.acl {
            acl.sign(&mut request);
        }
        connection
            .outbound
            .send(request.to_bytes()?)
            .map_err(|_| connection.shared.closed_error())
    }

    /// The live connection, dialling a new one when there is none.
    async fn connection(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Arc<Connection>, Error> {
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let timed_out = || Error::Timeout {
            addr: self.addr.clone(),
            what: "connect".to_string(),
            after: timeout,
        };
        let _dialling = tokio::time::timeout_at(deadline, self.connecting.lock())
            .await
            .map_err(|_| timed_out())?;
        // Someone else may have connected while we waited for the lock.
        if let Some(live) = self.live() {
            return Ok(live);
        }
        let stream = tokio::time::timeout_at(deadline, TcpStream::connect(&self.addr))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| Error::Io {
                addr: self.addr.clone(),
                message: format!("connect failed: {e}"),
            })?;
        // Small request/response frames: do not wait to fill a segment.
        let _ = stream.set_nodelay(true);
        let connection = Arc::new(Connection::start(self.addr.clone(), stream));
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(connection.clone());
        tracing::debug!(message = "Connected.", addr = %self.addr);
        Ok(connection)
    }

    fn live(&self) -> Option<Arc<Connection>> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        current
            .as_ref()
            .filter(|c| c.shared.alive.load(Ordering::Acquire))
            .cloned()
    }
}

/// One TCP connection: the writer queue, the waiter table, and a way to stop
/// the reader when the connection is dropped.
struct Connection {
    outbound: mpsc::UnboundedSender<Bytes>,
    shared: Arc<Shared>,
    /// Dropping this sender stops the reader task.
    _stop_reader: oneshot::Sender<()>,
}

/// State the reader, the writer and requesters share.
struct Shared {
    addr: String,
    /// False once the socket failed; no new waiter is registered after that.
    alive: AtomicBool,
    /// Why the connection died, for requests that arrive afterwards.
    failure: Mutex<Option<String>>,
    waiters: Mutex<HashMap<i32, Waiter>>,
}

impl Connection {
    fn start(addr: String, stream: TcpStream) -> Connection {
        let (read_half, write_half) = stream.into_split();
        let (outbound, queue) = mpsc::unbounded_channel();
        let (stop_reader, stopped) = oneshot::channel();
        let shared = Arc::new(Shared {
            addr,
            alive: AtomicBool::new(true),
            failure: Mutex::new(None),
            waiters: Mutex::new(HashMap::new()),
        });
        tokio::spawn(write_loop(write_half, queue, shared.clone()));
        tokio::spawn(read_loop(
            read_half,
            outbound.downgrade(),
            shared.clone(),
            stopped,
        ));
        Connection {
            outbound,
            shared,
            _stop_reader: stop_reader,
        }
    }
}

impl Shared {
    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Waiter>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Record a waiter, unless the connection already failed. Checked under
    /// the same lock `fail` takes, so no waiter can be stranded.
    fn register(&self, opaque: i32, waiter: Waiter) -> Result<(), Error> {
        let mut waiters = self.lock_waiters();
        if !self.alive.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        waiters.insert(opaque, waiter);
        Ok(())
    }

    fn forget(&self, opaque: i32) {
        self.lock_waiters().remove(&opaque);
    }

    fn complete(&self, response: Command) {
        let waiter = self.lock_waiters().remove(&response.opaque);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(Ok(response));
            }
            None => tracing::debug!(
                message = "Dropped a response nobody waits for (timed out?).",
                addr = %self.addr,
                opaque = response.opaque,
                code = response.code,
            ),
        }
    }

    /// Mark the connection dead and fail every waiting request with `error`.
    fn fail(&self, error: impl Fn() -> Error) {
        let drained: Vec<Waiter> = {
            let mut waiters = self.lock_waiters();
            self.alive.store(false, Ordering::Release);
            waiters.drain().map(|(_, w)| w).collect()
        };
        let first = error();
        tracing::debug!(message = "Connection failed.", addr = %self.addr, error = %first);
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(first.to_string());
        for waiter in drained {
            let _ = waiter.send(Err(error()));
        }
    }

    fn closed_error(&self) -> Error {
        let why = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "connection closed".to_string());
        Error::Io {
            addr: self.addr.clone(),
            message: why,
        }
    }

    fn io(&self, message: String) -> impl Fn() -> Error + '_ {
        move || Error::Io {
            addr: self.addr.clone(),
            message: message.clone(),
        }
    }
}

/// Coalesce queued frames into one write; stop when the queue closes or the
/// socket fails.
async fn write_loop(
    mut socket: OwnedWriteHalf,
    mut queue: mpsc::UnboundedReceiver<Bytes>,
    shared: Arc<Shared>,
) {
    /// Flush a batch once it holds this much, even if more is queued.
    const BATCH_BYTES: usize = 256 * 1024;
    let mut batch = BytesMut::new();
    while let Some(first) = queue.recv().await {
        batch.extend_from_slice(&first);
        while batch.len() < BATCH_BYTES {
            match queue.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = socket.write_all(&batch).await {
            shared.fail(shared.io(format!("write failed: {e}")));
            return;
        }
        batch.clear();
    }
    let _ = socket.shutdown().await;
}

/// Read frames, hand responses to their waiters, refuse server requests.
async fn read_loop(
    mut socket: OwnedReadHalf,
    outbound: mpsc::WeakUnboundedSender<Bytes>,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    /// Grow the buffer by at least this much before each read. The buffer
    /// never holds more than one maximum frame plus one read.
    const READ_CHUNK: usize = 64 * 1024;
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    loop {
        loop {
            match frame::decode(&buffer) {
                Ok(Decoded::Frame(command, used)) => {
                    buffer.advance(used);
                    if command.is_response() {
                        shared.complete(command);
                    } else {
                        answer_server_request(&command, &outbound, &shared.addr);
                    }
                }
                Ok(Decoded::Incomplete) => break,
                Err(error) => {
                    let message = error.to_string();
                    shared.fail(|| Error::Protocol(format!("{message} (from {})", shared.addr)));
                    return;
                }
            }
        }
        if buffer.capacity() - buffer.len() < READ_CHUNK {
            buffer.reserve(READ_CHUNK);
        }
        tokio::select! {
            read = socket.read_buf(&mut buffer) => match read {
                Ok(0) if buffer.is_empty() => {
                    shared.fail(shared.io("connection closed by peer".to_string()));
                    return;
                }
                Ok(0) => {
                    let held = buffer.len();
                    shared.fail(shared.io(format!(
                        "connection closed by peer in the middle of a frame ({held} bytes received)"
                    )));
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    shared.fail(shared.io(format!("read failed: {e}")));
                    return;
                }
            },
            _ = &mut stop => {
                shared.fail(shared.io("connection closed by client".to_string()));
                return;
            }
        }
    }
}

/// Brokers push requests to clients (e.g. `NOTIFY_CONSUMER_IDS_CHANGED`). An
/// admin client has nothing to say: answer "not supported" unless oneway.
fn answer_server_request(
    request: &Command,
    outbound: &mpsc::WeakUnboundedSender<Bytes>,
    addr: &str,
) {
    tracing::debug!(
        message = "Refusing a request from the peer.",
        addr,
        code = request.code
    );
    if request.is_oneway() {
        return;
    }
    let reply = Command::response_to(
        request,
        response::REQUEST_CODE_NOT_SUPPORTED,
        Some(format!(
            "mqaudit does not serve request code {}",
            request.code
        )),
    );
    if let (Some(queue), Ok(bytes)) = (outbound.upgrade(), reply.to_bytes()) {
        let _ = queue.send(bytes);
    }
}

/// One [`Client`] per address, created on first use.
#[derive(Debug)]
pub struct Pool {
    options: ClientOptions,
    clients: Mutex<HashMap<String, Arc<Client>>>,
}

impl Pool {
    /// An empty pool whose clients use `options`.
    pub fn new(options: ClientOptions) -> Pool {
        Pool {
            options,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The options every client of this pool uses.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The client for `addr`.
    pub fn client(&self, addr: &str) -> Arc<Client> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        clients
            .entry(addr.to_string())
            .or_insert_with(|| Arc::new(Client::new(addr, self.options.clone())))
            .clone()
    }

    /// Send `request` to `addr` and wait up to `timeout` for the response.
    ///
    /// # Errors
    /// As [`Client::invoke`].
    pub async fn invoke(
        &self,
        addr: &str,
        request: Command,
        timeout: Duration,
    ) -> Result<Command, Error> {
        self.client(addr).invoke_timeout(request, timeout).await
    }
}
