//! The client's side of the socket: the halves of its connection, the bytes read and not yet
//! parsed, and the replies waiting to be written. Reading pauses (backpressure) while the
//! session says so; this part only holds the buffers and knows how much to read next.

use crate::protocol::RequestParser;
use crate::transport::{ReadHalf, WriteHalf};
use crate::wire::{ReadSize, WriteQueue};
use bytes::BytesMut;

/// One client's socket and buffers.
pub(super) struct ClientIo {
    pub(super) rd: ReadHalf,
    pub(super) wr: WriteHalf,
    /// Bytes read from the client and not parsed yet.
    pub(super) rbuf: BytesMut,
    /// How much the next read of the client may take.
    pub(super) read_size: ReadSize,
    /// What is in `rbuf` is an incomplete request (or nothing): read before parsing again.
    pub(super) need_input: bool,
    /// Replies waiting to be written, in order.
    pub(super) out: WriteQueue,
    pub(super) parser: RequestParser,
}

impl ClientIo {
    pub(super) fn new(rd: ReadHalf, wr: WriteHalf, parser: RequestParser) -> ClientIo {
        ClientIo {
            rd,
            wr,
            rbuf: BytesMut::new(),
            read_size: ReadSize::default(),
            need_input: true,
            out: WriteQueue::new(),
            parser,
        }
    }

    /// Gives back the memory of a burst once the client is idle again.
    pub(super) fn shrink_idle(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > 64 * 1024 {
            self.rbuf = BytesMut::new();
        }
    }
}
