//! Buffered frame reads and writes over any byte stream (TCP, TLS either way, an
//! in-memory duplex in tests), in any protocol's framing.
//!
//! [`Stream`] unifies the transports; [`Conn`] owns a stream with a read buffer and a
//! write buffer, and cuts input into messages with a [`Framing`] (PostgreSQL's unless
//! told otherwise). Reads are cancel-safe (bytes read are kept in the buffer), so a
//! session can `select!` between its client and its origin. Writes are buffered by the
//! caller encoding into [`Conn::out`] and sent with [`Conn::flush`].

use std::io;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::wire::Framing;
use crate::wire::pg::startup::{StartupPacket, split_startup};
use crate::wire::pg::{PgFraming, WireError};

/// Any byte stream a connection can run over.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// A connection's transport.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS, warpdrive as the server.
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS, warpdrive as the client.
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// Any other stream, unencrypted (`tokio::io::duplex` in tests).
    Other(Box<dyn ByteStream>),
}

impl Stream {
    /// Whether the transport is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::ServerTls(_) | Stream::ClientTls(_))
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
            Stream::Other(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
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
            Stream::Other(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Other(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::ServerTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::ClientTls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Other(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
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
    /// The peer sent bytes that are not a valid PostgreSQL message.
    #[error("{0}")]
    Wire(#[from] WireError),
    /// The peer sent bytes that are not a valid MySQL packet.
    #[error("{0}")]
    MysqlWire(#[from] crate::wire::mysql::WireError),
    /// The peer closed the connection in the middle of a message.
    #[error("the connection closed in the middle of a message")]
    TruncatedFrame,
}

/// Read-side buffer size hint.
const READ_CHUNK: usize = 16 * 1024;
/// Flush the write buffer once it holds this much, even mid-batch.
pub const FLUSH_THRESHOLD: usize = 64 * 1024;

/// A framed connection.
pub struct Conn<F = PgFraming> {
    stream: Stream,
    read_buf: BytesMut,
    /// Bytes waiting to be written; encode into it, then [`Conn::flush`].
    pub out: BytesMut,
    max_frame: usize,
    framing: PhantomData<F>,
}

impl<F> Conn<F>
where
    F: Framing,
    F::Error: Into<ConnError>,
{
    /// Wraps a stream; frames above `max_frame` bytes are refused.
    pub fn new(stream: Stream, max_frame: usize) -> Conn<F> {
        Conn {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(READ_CHUNK),
            max_frame,
            framing: PhantomData,
        }
    }

    fn split(&mut self) -> Result<Option<F::Frame>, ConnError> {
        F::split(&mut self.read_buf, self.max_frame).map_err(Into::into)
    }

    /// The transport.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Takes the transport back, with whatever input was buffered.
    pub fn into_parts(self) -> (Stream, BytesMut) {
        (self.stream, self.read_buf)
    }

    /// Reads exactly `n` bytes: buffered input first, then from the stream without
    /// reading past them, so that what follows (a TLS handshake the peer starts at once)
    /// stays in the socket.
    pub async fn read_exact(&mut self, n: usize) -> io::Result<BytesMut> {
        let buffered = n.min(self.read_buf.len());
        let mut out = self.read_buf.split_to(buffered);
        if out.len() < n {
            let start = out.len();
            out.resize(n, 0);
            self.stream.read_exact(&mut out[start..]).await?;
        }
        Ok(out)
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

    /// Reads the next frame; `Ok(None)` on a clean end of stream.
    pub async fn read_frame(&mut self) -> Result<Option<F::Frame>, ConnError> {
        let limit = self.max_frame;
        self.read_with(|buf| F::split(buf, limit).map_err(Into::into))
            .await
    }

    /// Reads until `split` cuts a whole item off the input; `Ok(None)` on a clean end of
    /// stream, an error on an end in the middle of an item.
    async fn read_with<T>(
        &mut self,
        mut split: impl FnMut(&mut BytesMut) -> Result<Option<T>, ConnError>,
    ) -> Result<Option<T>, ConnError> {
        loop {
            if let Some(item) = split(&mut self.read_buf)? {
                return Ok(Some(item));
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
        F::holds_whole(&self.read_buf)
    }

    /// A frame already buffered, without reading.
    pub fn buffered_frame(&mut self) -> Result<Option<F::Frame>, ConnError> {
        self.split()
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
    pub async fn flush_or_read(&mut self) -> Result<Option<F::Frame>, ConnError> {
        if let Some(frame) = self.split()? {
            return Ok(Some(frame));
        }
        std::future::poll_fn(|cx| self.poll_flush_or_read(cx)).await
    }

    fn poll_flush_or_read(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<F::Frame>, ConnError>> {
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
                    if let Some(frame) = self.split()? {
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

/// What only PostgreSQL's framing has: the untagged packets before startup.
impl Conn<PgFraming> {
    /// Reads the untagged first packet; `Ok(None)` on a clean end of stream.
    pub async fn read_startup(&mut self) -> Result<Option<StartupPacket>, ConnError> {
        self.read_with(|buf| Ok(split_startup(buf)?)).await
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
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;
    use crate::wire::pg::encode;

    fn pair() -> (Conn, tokio::io::DuplexStream) {
        let (ours, theirs) = duplex(1 << 16);
        (Conn::new(Stream::Other(Box::new(ours)), 1 << 20), theirs)
    }

    #[tokio::test]
    async fn frames_arrive_whole_however_the_bytes_are_cut() {
        let (mut conn, mut peer) = pair();
        let mut bytes = BytesMut::new();
        encode::query(&mut bytes, "SELECT 1");
        encode::sync(&mut bytes);
        let (first, rest) = bytes.split_at(3);
        peer.write_all(first).await.expect("write");
        assert!(!conn.has_buffered_frame());
        peer.write_all(rest).await.expect("write");
        let query = conn.read_frame().await.expect("read").expect("a frame");
        assert_eq!(query.tag(), b'Q');
        assert!(conn.has_buffered_frame());
        assert_eq!(
            conn.buffered_frame()
                .expect("valid")
                .expect("buffered")
                .tag(),
            b'S'
        );
        assert!(!conn.has_buffered_input());
        drop(peer);
        assert!(conn.read_frame().await.expect("clean end").is_none());
    }

    #[tokio::test]
    async fn an_end_mid_frame_and_an_oversized_frame_are_errors() {
        let (mut conn, mut peer) = pair();
        peer.write_all(&[b'Q', 0, 0, 0, 9, b'x'])
            .await
            .expect("write");
        drop(peer);
        assert!(matches!(
            conn.read_frame().await,
            Err(ConnError::TruncatedFrame)
        ));
        let (ours, mut peer) = duplex(64);
        let mut small: Conn = Conn::new(Stream::Other(Box::new(ours)), 16);
        peer.write_all(&[b'Q', 0, 0, 1, 0]).await.expect("write");
        assert!(matches!(small.read_frame().await, Err(ConnError::Wire(_))));
    }

    #[tokio::test]
    async fn a_long_write_reads_what_the_peer_answers_meanwhile() {
        // A peer that answers each message before reading the next, with buffers too
        // small for the whole pipeline: writing without reading would never end.
        let (ours, mut peer) = duplex(256);
        let mut conn: Conn = Conn::new(Stream::Other(Box::new(ours)), 1 << 20);
        for _ in 0..64 {
            encode::query(&mut conn.out, "SELECT 'a fairly long query text'");
        }
        let echo = tokio::spawn(async move {
            let mut seen = 0;
            let mut buf = [0u8; 64];
            while seen < 64 * 40 {
                let n = peer.read(&mut buf).await.expect("read");
                seen += n;
                let mut reply = BytesMut::new();
                encode::command_complete(&mut reply, "SELECT 1");
                peer.write_all(&reply).await.expect("write");
            }
        });
        let mut replies = 0;
        let written = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while let Some(frame) = conn.flush_or_read().await.expect("a reply or the end") {
                assert_eq!(frame.tag(), b'C');
                replies += 1;
            }
        });
        written.await.expect("no deadlock");
        assert!(conn.out.is_empty());
        assert!(replies > 0);
        echo.abort();
    }

    #[tokio::test]
    async fn an_idle_connection_with_input_or_closed_is_not_reusable() {
        let (mut conn, mut peer) = pair();
        assert!(conn.is_idle_and_open());
        peer.write_all(b"E").await.expect("write");
        tokio::task::yield_now().await;
        assert!(!conn.is_idle_and_open());
        let (mut closed, peer) = pair();
        drop(peer);
        assert!(!closed.is_idle_and_open());
        assert!(!closed.stream().is_tls());
    }
}
