//! The byte streams sessions and upstream connections run on: a plain TCP socket, or a TCP
//! socket carrying TLS ([`TlsConn`]: rustls's sans-IO connection driven directly over the
//! socket's non-blocking reads and writes, no relay task, no socket pair). Both take the same
//! readiness-based, non-blocking I/O (`readable`/`writable`, `read_buf`/`try_read_buf`,
//! `try_write_vectored`), so the code above them is the same for both, and a plain connection
//! pays one `match` and nothing else.
//!
//! TLS sits in the caller's own task: a batch of replies is encrypted and written in the same
//! turn that produced it (one `writev`), and a batch of requests is read and decrypted in the
//! turn that parses it. An earlier design relayed TLS through a task and a Unix socket pair;
//! it cost four extra syscalls and a task wake-up per batch per direction, and two relay
//! buffers and two more sockets per connection: TLS->TLS at `-P 16` was 0.5-0.7x direct TLS
//! Redis, 0.7-0.97x without it, and an idle TLS client cost 25 KiB of RSS, 20.5 KiB without.
//!
//! Readiness is the subtle part, because rustls buffers in between: plaintext can sit
//! decrypted in rustls while the socket has nothing more to signal, and encrypted bytes can
//! wait for a socket that was full. So a read feeds everything it takes from the socket
//! through rustls into the caller's buffer (no plaintext is left for the socket to forget;
//! records read during the handshake are looked at by the first read), a wait for input also
//! flushes encrypted bytes whose plaintext the write queue already handed over, and
//! `writable` waits only while encrypted bytes are pending. Such bytes are flushed by the next
//! write, read or wait, and by [`TlsConn::close`]; a session that neither reads (its pipeline
//! full) nor gets a reply to write would hold them, which takes `max_pipeline` requests that
//! are never answered.
//!
//! An idle TLS connection holds rustls's read buffer (4 KiB: rustls shrinks it back to one
//! read, not below), its state and keys (about 3 KiB), and no buffer of its own: reads go
//! through one 64 KiB buffer per thread.

use crate::wire::TryWriteVectored;
use bytes::BytesMut;
use std::cell::RefCell;
use std::io::{self, BufRead, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::{tcp, TcpStream};

/// A connected byte stream.
#[derive(Debug)]
pub enum Transport {
    Tcp(TcpStream),
    /// A TLS connection, through its handshake.
    Tls(Arc<TlsConn>),
}

/// The read half of a [`Transport`].
#[derive(Debug)]
pub enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Tls(Arc<TlsConn>),
}

/// The write half of a [`Transport`].
#[derive(Debug)]
pub enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Tls(Arc<TlsConn>),
}

impl Transport {
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Transport::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Transport::Tls(t) => (ReadHalf::Tls(t.clone()), WriteHalf::Tls(t)),
        }
    }

    /// True for an encrypted connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls(_))
    }

    /// What closes a TLS connection cleanly once its user is done with it (see
    /// [`TlsConn::close`]); `None` for plain TCP, where dropping the socket is the close.
    pub fn closer(&self) -> Option<Arc<TlsConn>> {
        match self {
            Transport::Tcp(_) => None,
            Transport::Tls(t) => Some(t.clone()),
        }
    }

    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.readable().await,
            Transport::Tls(t) => t.wait_read().await,
        }
    }

    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.writable().await,
            Transport::Tls(t) => t.wait_write().await,
        }
    }

    pub fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.try_read_buf(buf),
            Transport::Tls(t) => t.try_read_buf(buf),
        }
    }
}

impl AsRawFd for Transport {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Transport::Tcp(s) => s.as_raw_fd(),
            Transport::Tls(t) => t.tcp.as_raw_fd(),
        }
    }
}

impl TryWriteVectored for Transport {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.try_write_vectored(bufs),
            Transport::Tls(t) => t.try_write_vectored(bufs),
        }
    }
}

impl ReadHalf {
    /// Waits for bytes and appends them to `buf`; `Ok(0)` at end of stream.
    pub async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ReadHalf::Tcp(r) => r.read_buf(buf).await,
            ReadHalf::Tls(t) => t.read_buf(buf).await,
        }
    }
}

impl WriteHalf {
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(w) => w.writable().await,
            WriteHalf::Tls(t) => t.wait_write().await,
        }
    }
}

impl TryWriteVectored for WriteHalf {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            WriteHalf::Tcp(w) => w.try_write_vectored(bufs),
            WriteHalf::Tls(t) => t.try_write_vectored(bufs),
        }
    }
}

/// Encrypted bytes rustls may hold for a socket that is not taking them, before a write takes
/// no more plaintext (`WouldBlock`: the write queue above keeps the rest, and backpressure
/// works as for a full TCP socket).
const TLS_OUT_LIMIT: usize = 64 * 1024;

/// One socket read's worth of TLS records. One buffer per thread, not per connection: a read
/// takes what the socket has into it and feeds all of it through rustls before returning, so
/// an idle connection holds no read buffer beyond rustls's own (a few KiB, shrunk when empty).
const TLS_READ_CHUNK: usize = 64 * 1024;

thread_local! {
    static TLS_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A TLS connection over a TCP socket: rustls's state machine (`rustls::Connection`) fed and
/// drained by the socket's non-blocking `try_read`/`try_write`. Both halves of a split
/// connection share it (the lock is never contended: one task owns both halves).
pub struct TlsConn {
    tcp: TcpStream,
    state: Mutex<TlsState>,
}

struct TlsState {
    conn: rustls::Connection,
    /// Data may be waiting in rustls that no socket readiness will announce (records read
    /// during the handshake, or the end of the stream already seen): the next wait for input
    /// returns at once, and the next read looks.
    look: bool,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").field("tcp", &self.tcp).finish()
    }
}

/// A rustls error as an I/O error (the rustls error is its source, for logs).
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// `io::Write` on a non-blocking socket, for `write_tls`.
struct TryWriter<'a>(&'a TcpStream);

impl io::Write for TryWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsConn {
    /// The transport of a connection whose handshake is done (by tokio-rustls), taken apart
    /// into its socket and its rustls state.
    pub fn transport(tcp: TcpStream, mut conn: rustls::Connection) -> Transport {
        conn.set_buffer_limit(Some(TLS_OUT_LIMIT));
        Transport::Tls(Arc::new(TlsConn {
            tcp,
            state: Mutex::new(TlsState { conn, look: true }),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, TlsState> {
        // A panic elsewhere cannot leave rustls half-updated in a way that matters more than
        // the connection failing on its next record.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes pending TLS records until none are left or the socket is full. True when some
    /// bytes went out.
    fn flush(&self, conn: &mut rustls::Connection) -> io::Result<bool> {
        let mut wrote = false;
        while conn.wants_write() {
            match conn.write_tls(&mut TryWriter(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => wrote = true,
                Err(e) if would_block(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(wrote)
    }

    /// Reads what the socket has, decrypts it and appends the plaintext to `buf`; `Ok(0)` at
    /// the end of the stream (TCP EOF or `close_notify`), `WouldBlock` when there is nothing.
    /// Everything read from the socket is decrypted into `buf` before this returns, so no
    /// plaintext waits in rustls for readiness that will not come.
    pub fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let mut st = self.lock();
        let look = std::mem::replace(&mut st.look, false);
        let start = buf.len();
        let result = TLS_SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            if scratch.len() < TLS_READ_CHUNK {
                scratch.resize(TLS_READ_CHUNK, 0);
            }
            self.read_into(&mut st.conn, look, &mut scratch, buf)
        });
        // Reading may have produced records to send (alerts, key updates, tickets).
        if st.conn.wants_write() {
            if let Err(e) = self.flush(&mut st.conn) {
                if result.is_ok() && buf.len() == start {
                    return Err(e);
                }
            }
        }
        let ended = result?;
        match buf.len() - start {
            0 if ended => Ok(0),
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => {
                if ended {
                    // The end comes as `Ok(0)` on the next read.
                    st.look = true;
                }
                Ok(n)
            }
        }
    }

    /// The body of [`TlsConn::try_read_buf`]: true when the stream has ended.
    fn read_into(
        &self,
        conn: &mut rustls::Connection,
        look: bool,
        scratch: &mut [u8],
        buf: &mut BytesMut,
    ) -> io::Result<bool> {
        // Records already in rustls (read with the handshake) come first. Otherwise rustls
        // holds no complete record: every read processes all it fed in.
        if look && Self::decrypt(conn, &mut &[][..], buf)? {
            return Ok(true);
        }
        loop {
            let mut short = false;
            // A short read clears the socket's readiness, as tokio's own reads do: the
            // next wait sleeps instead of costing a read that finds nothing.
            let read = self.tcp.try_io(Interest::READABLE, || {
                let n = self.tcp.try_read(scratch)?;
                if n > 0 && n < scratch.len() {
                    short = true;
                }
                Ok(n)
            });
            let n = match read {
                Ok(n) => n,
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) => return Err(e),
            };
            let mut data = &scratch[..n];
            if n == 0 {
                // The TCP end of stream: rustls learns it from an empty read.
                let _ = conn.read_tls(&mut data)?;
                return Self::decrypt(conn, &mut data, buf).map(|_| true);
            }
            while !data.is_empty() {
                if Self::decrypt(conn, &mut data, buf)? {
                    return Ok(true);
                }
            }
            if short {
                return Ok(false);
            }
        }
    }

    /// Feeds (some of) `data` to rustls, processes it and moves the plaintext to `buf`. True
    /// when the peer has closed (cleanly or not).
    fn decrypt(
        conn: &mut rustls::Connection,
        data: &mut &[u8],
        buf: &mut BytesMut,
    ) -> io::Result<bool> {
        if !data.is_empty() {
            conn.read_tls(data)?;
        }
        conn.process_new_packets().map_err(tls_error)?;
        let mut reader = conn.reader();
        loop {
            match reader.fill_buf() {
                Ok([]) => return Ok(true),
                Ok(chunk) => {
                    let n = chunk.len();
                    buf.extend_from_slice(chunk);
                    reader.consume(n);
                }
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }

    /// Polls until a read may find something: the socket is readable, or rustls may hold
    /// input already. Encrypted bytes waiting for the socket are flushed meanwhile (replies
    /// the write queue already handed over: nobody else waits for them).
    ///
    /// Poll-based (`poll_read_ready`/`poll_write_ready`), not `readable()`/`writable()`
    /// futures, so the read future of a [`ReadHalf`] stays as small as a plain socket's: the
    /// plain path does not pay for TLS in the size of the futures it builds every turn. The
    /// socket keeps one waker per direction, so one task must drive both halves (sessions
    /// and upstream drivers do).
    fn poll_wait_read(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let pending = {
                let st = self.lock();
                if st.look {
                    return Poll::Ready(Ok(()));
                }
                st.conn.wants_write()
            };
            if pending {
                if let Poll::Ready(r) = self.tcp.poll_write_ready(cx) {
                    r?;
                    let mut st = self.lock();
                    // A full socket clears the readiness: the next poll waits.
                    self.flush(&mut st.conn)?;
                    continue;
                }
            }
            return self.tcp.poll_read_ready(cx);
        }
    }

    /// Waits until a read may find something (see `TlsConn::poll_wait_read`).
    pub async fn wait_read(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_wait_read(cx)).await
    }

    /// Waits for input and appends it to `buf`; `Ok(0)` at the end of the stream.
    pub async fn read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        std::future::poll_fn(|cx| loop {
            match self.try_read_buf(buf) {
                Err(e) if would_block(&e) => ready!(self.poll_wait_read(cx))?,
                r => return Poll::Ready(r),
            }
        })
        .await
    }

    /// Waits until a write can take plaintext: at once unless encrypted bytes wait for the
    /// socket; then until the socket took some of them.
    pub async fn wait_write(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| loop {
            if !self.lock().conn.wants_write() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.tcp.poll_write_ready(cx))?;
            let mut st = self.lock();
            if self.flush(&mut st.conn)? {
                return Poll::Ready(Ok(()));
            }
        })
        .await
    }

    /// Encrypts as much of `bufs` as fits under `TLS_OUT_LIMIT` and writes what the socket
    /// takes; `WouldBlock` when nothing fits.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut st = self.lock();
        let n = io::Write::write_vectored(&mut st.conn.writer(), bufs)?;
        self.flush(&mut st.conn)?;
        if n == 0 && bufs.iter().any(|b| !b.is_empty()) {
            // Full: the flush above made room, or the socket is full too.
            let n = io::Write::write_vectored(&mut st.conn.writer(), bufs)?;
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.flush(&mut st.conn)?;
            return Ok(n);
        }
        Ok(n)
    }

    /// Ends the connection cleanly: `close_notify` after whatever is still to be written,
    /// waiting up to `wait` for the socket to take it (the last replies to a client).
    pub async fn close(&self, wait: Duration) {
        self.lock().conn.send_close_notify();
        let _ = tokio::time::timeout(wait, async {
            loop {
                {
                    let mut st = self.lock();
                    self.flush(&mut st.conn)?;
                    if !st.conn.wants_write() {
                        return Ok::<(), io::Error>(());
                    }
                }
                self.tcp.writable().await?;
            }
        })
        .await;
    }
}

impl Drop for TlsConn {
    /// A connection dropped without [`TlsConn::close`] (an upstream connection) still says
    /// `close_notify`, if the socket takes it now.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        st.conn.send_close_notify();
        while st.conn.wants_write() {
            match st.conn.write_tls(&mut TryWriter(&self.tcp)) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
}
