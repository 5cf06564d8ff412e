//! Buffered, batched socket writes shared by client sessions and upstream connections.
//!
//! Many small frames (replies, pipelined requests) are coalesced into one buffer and written
//! with one syscall; large payloads are queued as their own `Bytes` and written with
//! `writev`, so a 100 MB value is never copied. Writes are non-blocking (`try_write_vectored`):
//! the caller's task waits for writability in its own `select!`, and keeps reading meanwhile.

use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

/// A socket that takes non-blocking vectored writes.
pub trait TryWriteVectored {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl TryWriteVectored for TcpStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }
}

impl TryWriteVectored for OwnedWriteHalf {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        OwnedWriteHalf::try_write_vectored(self, bufs)
    }
}

/// Payloads at least this large are queued without copying.
const BIG: usize = 16 * 1024;
/// At most this many slices per `writev`.
const MAX_SLICES: usize = 64;

#[derive(Default)]
pub struct WriteQueue {
    chunks: VecDeque<Bytes>,
    tail: BytesMut,
    len: usize,
}

impl WriteQueue {
    pub fn new() -> WriteQueue {
        WriteQueue {
            chunks: VecDeque::new(),
            tail: BytesMut::new(),
            len: 0,
        }
    }

    /// Bytes waiting to be written.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a frame, copying it only when it is small.
    pub fn push(&mut self, data: &Bytes) {
        self.len += data.len();
        if data.len() >= BIG {
            self.seal_tail();
            self.chunks.push_back(data.clone());
        } else {
            self.tail.extend_from_slice(data);
        }
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            let sealed = self.tail.split().freeze();
            self.chunks.push_back(sealed);
        }
    }

    /// Writes as much as the socket takes now. `Ok(())` also when the socket would block.
    pub fn try_write<W: TryWriteVectored>(&mut self, stream: &W) -> io::Result<()> {
        while self.len > 0 {
            let written = {
                let mut slices: [IoSlice<'_>; MAX_SLICES] = [IoSlice::new(&[]); MAX_SLICES];
                let mut n = 0;
                for c in self.chunks.iter().take(MAX_SLICES - 1) {
                    slices[n] = IoSlice::new(c);
                    n += 1;
                }
                if n < MAX_SLICES - 1 || self.chunks.len() == n {
                    slices[n] = IoSlice::new(&self.tail);
                    n += 1;
                }
                match stream.try_write_vectored(&slices[..n]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(w) => w,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) => return Err(e),
                }
            };
            self.consume(written);
        }
        Ok(())
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            match self.chunks.front_mut() {
                Some(c) if c.len() <= n => {
                    n -= c.len();
                    self.chunks.pop_front();
                }
                Some(c) => {
                    c.advance(n);
                    n = 0;
                }
                None => {
                    self.tail.advance(n);
                    n = 0;
                }
            }
        }
        if self.tail.is_empty() && self.tail.capacity() > 1024 * 1024 {
            self.tail = BytesMut::new();
        }
    }
}

/// Makes room in a read buffer: at least 16 KiB free, doubling for large frames.
pub fn reserve_read(buf: &mut BytesMut) {
    reserve_read_from(buf, 16 * 1024);
}

/// Makes room in a read buffer: at least `min` bytes free (an idle client costs little), and
/// as much again as it holds once a frame outgrows that.
pub fn reserve_read_from(buf: &mut BytesMut, min: usize) {
    if buf.capacity() - buf.len() < min {
        buf.reserve(min.max(buf.len()));
    }
}

/// How much room a connection's next read gets: little while the peer sends little (an idle
/// client costs little), doubled after a read that filled the room (a pipeline larger than the
/// room then takes one read instead of many: with 1 KiB values, 16 pipelined SETs are 17 KiB),
/// halved again after reads that used a quarter of it or less.
#[derive(Debug, Clone, Copy)]
pub struct ReadSize {
    want: usize,
}

impl ReadSize {
    pub const MIN: usize = 1024;
    pub const MAX: usize = 64 * 1024;

    /// The room to reserve before the next read.
    pub fn want(&self) -> usize {
        self.want
    }

    /// Learns from a read of `got` bytes into `room` free bytes.
    pub fn after_read(&mut self, room: usize, got: usize) {
        if got >= room {
            self.want = (self.want * 2).min(Self::MAX);
        } else if got <= self.want / 4 {
            self.want = (self.want / 2).max(Self::MIN);
        }
    }
}

impl Default for ReadSize {
    fn default() -> Self {
        ReadSize { want: Self::MIN }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_size_grows_with_full_reads_and_shrinks_back() {
        let mut r = ReadSize::default();
        assert_eq!(r.want(), ReadSize::MIN);
        for _ in 0..10 {
            let room = r.want();
            r.after_read(room, room);
        }
        assert_eq!(r.want(), ReadSize::MAX, "capped");
        r.after_read(ReadSize::MAX, ReadSize::MAX / 2);
        assert_eq!(r.want(), ReadSize::MAX, "a read that used half keeps it");
        for _ in 0..10 {
            r.after_read(r.want(), 30);
        }
        assert_eq!(r.want(), ReadSize::MIN, "small reads bring it back");
    }

    #[test]
    fn consume_spans_chunks_and_tail() {
        let mut q = WriteQueue::new();
        q.push(&Bytes::from_static(b"ab"));
        q.push(&Bytes::from(vec![b'x'; BIG]));
        q.push(&Bytes::from_static(b"cd"));
        assert_eq!(q.len(), BIG + 4);
        q.consume(3);
        assert_eq!(q.chunks.len(), 1);
        q.consume(BIG - 1);
        assert_eq!(q.chunks.len(), 0);
        assert_eq!(&q.tail[..], b"cd");
        q.consume(2);
        assert!(q.is_empty());
    }
}
