//! The byte streams sessions and upstream connections run on: a plain TCP socket, or the local
//! end of a Unix socket pair whose other end a relay task ([`relay`]) joins to an encrypted
//! stream (TLS, see `crate::tls`). Both take the same readiness-based, non-blocking I/O
//! (`readable`/`writable`, `try_read_buf`, `try_write_vectored`), so the code above them is
//! the same for both, and a plain connection pays one `match` and nothing else.

use crate::wire::TryWriteVectored;
use bytes::BytesMut;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{tcp, unix, TcpStream, UnixStream};
use tokio::task::JoinHandle;

/// A connected byte stream.
#[derive(Debug)]
pub enum Transport {
    Tcp(TcpStream),
    /// The local end of a relayed (TLS) connection.
    Relayed(UnixStream),
}

/// The read half of a [`Transport`].
#[derive(Debug)]
pub enum ReadHalf {
    Tcp(tcp::OwnedReadHalf),
    Relayed(unix::OwnedReadHalf),
}

/// The write half of a [`Transport`].
#[derive(Debug)]
pub enum WriteHalf {
    Tcp(tcp::OwnedWriteHalf),
    Relayed(unix::OwnedWriteHalf),
}

impl Transport {
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Transport::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Transport::Relayed(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Relayed(r), WriteHalf::Relayed(w))
            }
        }
    }

    /// True for an encrypted (relayed) connection.
    pub fn is_relayed(&self) -> bool {
        matches!(self, Transport::Relayed(_))
    }

    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.readable().await,
            Transport::Relayed(s) => s.readable().await,
        }
    }

    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.writable().await,
            Transport::Relayed(s) => s.writable().await,
        }
    }

    pub fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.try_read_buf(buf),
            Transport::Relayed(s) => s.try_read_buf(buf),
        }
    }
}

impl AsRawFd for Transport {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Transport::Tcp(s) => s.as_raw_fd(),
            Transport::Relayed(s) => s.as_raw_fd(),
        }
    }
}

impl TryWriteVectored for Transport {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.try_write_vectored(bufs),
            Transport::Relayed(s) => s.try_write_vectored(bufs),
        }
    }
}

impl ReadHalf {
    /// Waits for bytes and appends them to `buf`; `Ok(0)` at end of stream.
    pub async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            ReadHalf::Tcp(r) => r.read_buf(buf).await,
            ReadHalf::Relayed(r) => r.read_buf(buf).await,
        }
    }
}

impl WriteHalf {
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            WriteHalf::Tcp(w) => w.writable().await,
            WriteHalf::Relayed(w) => w.writable().await,
        }
    }
}

impl TryWriteVectored for WriteHalf {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            WriteHalf::Tcp(w) => w.try_write_vectored(bufs),
            WriteHalf::Relayed(w) => w.try_write_vectored(bufs),
        }
    }
}

/// Relay buffer per direction: small while a connection idles (most clients of a proxy do),
/// doubled on every read that fills it, up to one TLS record's worth of plaintext, and back
/// to small after a short read.
const RELAY_BUF_MIN: usize = 1024;
const RELAY_BUF_MAX: usize = 16 * 1024;

/// Joins `remote` (an encrypted stream, already through its handshake) to a new Unix socket
/// pair, relayed by a task on the current runtime, and returns the pair's other end. The relay
/// ends when this side closes (the remote gets a clean close, such as TLS `close_notify`), or
/// when the remote closes or fails and this side has then closed too. The handle says when
/// the relay is done (what this side wrote has been delivered, or cannot be).
pub fn relay<S>(remote: S) -> io::Result<(Transport, JoinHandle<()>)>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (ours, theirs) = UnixStream::pair()?;
    let handle = tokio::spawn(pump(remote, theirs));
    Ok((Transport::Relayed(ours), handle))
}

async fn pump<S: AsyncRead + AsyncWrite>(remote: S, local: UnixStream) {
    let (mut remote_rd, mut remote_wr) = tokio::io::split(remote);
    let (mut local_rd, mut local_wr) = local.into_split();
    let outbound = async {
        let _ = copy(&mut local_rd, &mut remote_wr).await;
        let _ = remote_wr.shutdown().await;
    };
    let inbound = async {
        let _ = copy(&mut remote_rd, &mut local_wr).await;
        let _ = local_wr.shutdown().await;
    };
    tokio::pin!(outbound, inbound);
    tokio::select! {
        // This side closed: what it wrote is delivered; what the remote still sends is for
        // nobody.
        _ = &mut outbound => {}
        // The remote closed or failed: this side sees the end of stream, finishes writing
        // what it has (replies to a client that half-closed) and closes.
        _ = &mut inbound => outbound.await,
    }
}

/// Copies until end of stream, flushing after each chunk (a TLS writer holds records back
/// until flushed).
async fn copy<R, W>(rd: &mut R, wr: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; RELAY_BUF_MIN];
    loop {
        let n = rd.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        wr.write_all(&buf[..n]).await?;
        wr.flush().await?;
        if n == buf.len() && buf.len() < RELAY_BUF_MAX {
            buf = vec![0u8; buf.len() * 2];
        } else if n < RELAY_BUF_MIN && buf.len() > RELAY_BUF_MIN {
            buf = vec![0u8; RELAY_BUF_MIN];
        }
    }
}
