//! Buffered frame reads and writes over any byte stream (TCP, TLS either way).
//!
//! [`Stream`] unifies the transports; [`Conn`] owns a stream with a read buffer and a
//! write buffer. Reads are cancel-safe (bytes read are kept in the buffer), so a session
//! can `select!` between its client and its origin. Writes are buffered by the caller
//! encoding into [`Conn::out`] and sent with [`Conn::flush`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::wire::pg::startup::{StartupPacket, split_startup};
use crate::wire::pg::{Frame, WireError, split_frame};

/// A connection's transport.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, warpdrive as the server.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS, warpdrive as the client.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// Whether the transport is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Reads once into `buf`, after what it holds, by polling.
fn poll_read_more(
    stream: &mut Stream,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<io::Result<usize>> {
    let start = buf.len();
    buf.resize(start + READ_CHUNK, 0);
    let mut read = ReadBuf::new(&mut buf[start..]);
    let polled = Pin::new(stream).poll_read(cx, &mut read);
    let n = read.filled().len();
    buf.truncate(start + n);
    polled.map_ok(|()| n)
}

/// A failure reading frames.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not a valid message.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The peer closed the connection in the middle of a message.
    #[error("the connection closed in the middle of a message")]
    TruncatedFrame,
}

/// Read-side buffer size hint.
const READ_CHUNK: usize = 16 * 1024;
/// Flush the write buffer once it holds this much, even mid-batch.
pub const FLUSH_THRESHOLD: usize = 64 * 1024;

/// A framed connection.
pub struct Conn {
    stream: Stream,
    read_buf: BytesMut,
    /// Bytes waiting to be written; encode into it, then [`Conn::flush`].
    pub out: BytesMut,
    max_frame: usize,
}

impl Conn {
    /// Wraps a stream; frames above `max_frame` bytes are refused.
    pub fn new(stream: Stream, max_frame: usize) -> Conn {
        Conn {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(READ_CHUNK),
            max_frame,
        }
    }

    /// The transport.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Takes the transport back, with whatever input was buffered.
    pub fn into_parts(self) -> (Stream, BytesMut) {
        (self.stream, self.read_buf)
    }

    /// Whether input is buffered but not yet consumed.
    pub fn has_buffered_input(&self) -> bool {
        !self.read_buf.is_empty()
    }

    async fn fill(&mut self) -> Result<bool, ConnError> {
        if self.read_buf.capacity() - self.read_buf.len() < 1024 {
            self.read_buf.reserve(READ_CHUNK);
        }
        let n = self.stream.read_buf(&mut self.read_buf).await?;
        Ok(n > 0)
    }

    /// Reads the next tagged frame; `Ok(None)` on a clean end of stream.
    pub async fn read_frame(&mut self) -> Result<Option<Frame>, ConnError> {
        loop {
            if let Some(frame) = split_frame(&mut self.read_buf, self.max_frame)? {
                return Ok(Some(frame));
            }
            if !self.fill().await? {
                return if self.read_buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnError::TruncatedFrame)
                };
            }
        }
    }

    /// Whether a whole frame is buffered (the next read need not wait).
    pub fn has_buffered_frame(&self) -> bool {
        match self.read_buf.get(1..5) {
            Some(&[a, b, c, d]) => {
                let declared = u32::from_be_bytes([a, b, c, d]) as usize;
                self.read_buf.len() > declared
            }
            _ => false,
        }
    }

    /// A frame already buffered, without reading.
    pub fn buffered_frame(&mut self) -> Result<Option<Frame>, ConnError> {
        Ok(split_frame(&mut self.read_buf, self.max_frame)?)
    }

    /// Reads the untagged first packet; `Ok(None)` on a clean end of stream.
    pub async fn read_startup(&mut self) -> Result<Option<StartupPacket>, ConnError> {
        loop {
            if let Some(packet) = split_startup(&mut self.read_buf)? {
                return Ok(Some(packet));
            }
            if !self.fill().await? {
                return if self.read_buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnError::TruncatedFrame)
                };
            }
        }
    }

    /// Reads exactly one byte (the answer to an SSLRequest).
    pub async fn read_byte(&mut self) -> Result<u8, ConnError> {
        if self.read_buf.is_empty() && !self.fill().await? {
            return Err(ConnError::TruncatedFrame);
        }
        let byte = self.read_buf[0];
        let _ = self.read_buf.split_to(1);
        Ok(byte)
    }

    /// Writes everything in [`Conn::out`].
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        self.stream.flush().await
    }

    /// Writes what is buffered while reading what the peer sends meanwhile: `Ok(None)`
    /// once everything is written, or the next frame as soon as one arrives (call again to
    /// go on writing). A peer that answers while it reads, as PostgreSQL does, can fill
    /// both directions' socket buffers with a long pipeline; writing without reading would
    /// then wait forever.
    pub async fn flush_or_read(&mut self) -> Result<Option<Frame>, ConnError> {
        if let Some(frame) = split_frame(&mut self.read_buf, self.max_frame)? {
            return Ok(Some(frame));
        }
        std::future::poll_fn(|cx| self.poll_flush_or_read(cx)).await
    }

    fn poll_flush_or_read(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame>, ConnError>> {
        loop {
            let mut progressed = false;
            if !self.out.is_empty() {
                match Pin::new(&mut self.stream).poll_write(cx, &self.out) {
                    Poll::Ready(Ok(0)) => {
                        return Poll::Ready(Err(io::Error::from(io::ErrorKind::WriteZero).into()));
                    }
                    Poll::Ready(Ok(n)) => {
                        let _ = self.out.split_to(n);
                        progressed = true;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                    Poll::Pending => {}
                }
            }
            if self.out.is_empty() {
                return match Pin::new(&mut self.stream).poll_flush(cx) {
                    Poll::Ready(result) => Poll::Ready(result.map(|()| None).map_err(Into::into)),
                    Poll::Pending => Poll::Pending,
                };
            }
            // Written only in part: the peer may be waiting for its replies to be read.
            match poll_read_more(&mut self.stream, cx, &mut self.read_buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(ConnError::TruncatedFrame)),
                Poll::Ready(Ok(_)) => {
                    if let Some(frame) = split_frame(&mut self.read_buf, self.max_frame)? {
                        return Poll::Ready(Ok(Some(frame)));
                    }
                    progressed = true;
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error.into())),
                Poll::Pending => {}
            }
            if !progressed {
                return Poll::Pending;
            }
        }
    }

    /// Writes raw bytes after whatever is buffered.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.extend_from_slice(bytes);
        self.flush().await
    }

    /// Whether an idle connection is still usable: no unexpected input (an origin sends
    /// a FATAL ErrorResponse before closing a terminated backend) and no end of stream.
    /// Polls the socket once without waiting.
    pub fn is_idle_and_open(&mut self) -> bool {
        if !self.read_buf.is_empty() {
            return false;
        }
        let mut probe = [0u8; 1];
        let mut buf = ReadBuf::new(&mut probe);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        matches!(
            Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }

    /// Shuts the write side down, ignoring errors (the peer may already be gone).
    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
