//! The first message of a connection, which has no type byte: a four-byte length, a
//! four-byte code, and a body that depends on the code.

use bytes::{Bytes, BytesMut};

use super::{Reader, WireError};

/// PostgreSQL refuses startup packets longer than this (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

/// Protocol version 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 3 << 16;
/// The code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// The code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// A decoded first packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartupPacket {
    /// StartupMessage: protocol version and connection parameters.
    Startup(StartupMessage),
    /// SSLRequest: the client asks for TLS before the StartupMessage.
    SslRequest,
    /// GSSENCRequest: the client asks for GSSAPI encryption.
    GssEncRequest,
    /// CancelRequest, sent on a new connection.
    Cancel(CancelRequest),
}

/// StartupMessage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupMessage {
    /// Requested protocol minor version (the major is always 3).
    pub minor_version: u16,
    /// Parameters in the order sent (`user`, `database`, `options`, …).
    pub parameters: Vec<(String, String)>,
}

impl StartupMessage {
    /// The value of a parameter.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// CancelRequest: which backend, proven by its secret key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelRequest {
    /// The process id from BackendKeyData.
    pub process_id: i32,
    /// The secret key from BackendKeyData (four bytes in protocol 3.0).
    pub secret_key: Bytes,
}

/// Splits and decodes the first packet of a connection. `Ok(None)`: more bytes needed.
pub fn split_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let declared = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if declared < 8 {
        return Err(WireError::BadLength {
            len: declared.into(),
        });
    }
    let len = declared as usize;
    if len > MAX_STARTUP_PACKET_LEN {
        return Err(WireError::TooLarge {
            len,
            limit: MAX_STARTUP_PACKET_LEN,
        });
    }
    if buf.len() < len {
        buf.reserve(len - buf.len());
        return Ok(None);
    }
    let mut packet = buf.split_to(len).freeze();
    let _length = packet.split_to(4);
    let mut reader = Reader::new("startup", packet);
    let code = reader.i32()?;
    let decoded = match code {
        SSL_REQUEST_CODE => StartupPacket::SslRequest,
        GSSENC_REQUEST_CODE => StartupPacket::GssEncRequest,
        CANCEL_REQUEST_CODE => {
            let process_id = reader.i32()?;
            let secret_key = reader.rest();
            if secret_key.is_empty() {
                return Err(WireError::Malformed {
                    message: "CancelRequest",
                    problem: "secret key is missing",
                });
            }
            return Ok(Some(StartupPacket::Cancel(CancelRequest {
                process_id,
                secret_key,
            })));
        }
        version => {
            let (major, minor) = ((version >> 16) as u16, (version & 0xffff) as u16);
            if major != 3 {
                return Err(WireError::UnsupportedProtocol { major, minor });
            }
            return decode_parameters(reader, minor).map(|m| Some(StartupPacket::Startup(m)));
        }
    };
    reader.finish()?;
    Ok(Some(decoded))
}

fn decode_parameters(mut reader: Reader, minor_version: u16) -> Result<StartupMessage, WireError> {
    let text = |bytes: Bytes| {
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Malformed {
            message: "StartupMessage",
            problem: "a parameter is not valid UTF-8",
        })
    };
    let mut parameters = Vec::new();
    loop {
        let name = reader.cstr()?;
        if name.is_empty() {
            break;
        }
        let value = reader.cstr()?;
        parameters.push((text(name)?, text(value)?));
    }
    reader.finish()?;
    Ok(StartupMessage {
        minor_version,
        parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pg::encode;

    #[test]
    fn startup_message_round_trip() {
        let mut buf = BytesMut::new();
        encode::startup_message(&mut buf, &[("user", "app"), ("database", "shop")]);
        let mut partial = buf.split_to(6);
        assert_eq!(split_startup(&mut partial), Ok(None));
        partial.unsplit(buf);
        let packet = split_startup(&mut partial)
            .expect("valid")
            .expect("complete");
        let StartupPacket::Startup(message) = packet else {
            panic!("not a StartupMessage: {packet:?}");
        };
        assert_eq!(message.minor_version, 0);
        assert_eq!(message.parameter("user"), Some("app"));
        assert_eq!(message.parameter("database"), Some("shop"));
        assert!(partial.is_empty());
    }

    #[test]
    fn ssl_gss_and_cancel_requests() {
        let mut buf = BytesMut::new();
        encode::ssl_request(&mut buf);
        assert_eq!(split_startup(&mut buf), Ok(Some(StartupPacket::SslRequest)));
        let mut gss = BytesMut::from(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30][..]);
        assert_eq!(
            split_startup(&mut gss),
            Ok(Some(StartupPacket::GssEncRequest))
        );
        let mut cancel = BytesMut::new();
        encode::cancel_request(&mut cancel, 42, &[1, 2, 3, 4]);
        assert_eq!(
            split_startup(&mut cancel),
            Ok(Some(StartupPacket::Cancel(CancelRequest {
                process_id: 42,
                secret_key: Bytes::from_static(&[1, 2, 3, 4]),
            })))
        );
    }

    #[test]
    fn garbage_is_refused() {
        let mut http = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert!(split_startup(&mut http).is_err());
        let mut tiny = BytesMut::from(&[0, 0, 0, 4][..]);
        assert_eq!(
            split_startup(&mut tiny),
            Err(WireError::BadLength { len: 4 })
        );
        let mut v2 = BytesMut::from(&[0, 0, 0, 9, 0, 2, 0, 0, 0][..]);
        assert_eq!(
            split_startup(&mut v2),
            Err(WireError::UnsupportedProtocol { major: 2, minor: 0 })
        );
        let mut unterminated = BytesMut::from(&[0, 0, 0, 11, 0, 3, 0, 0, b'u', 0, b'x'][..]);
        assert!(matches!(
            split_startup(&mut unterminated),
            Err(WireError::Malformed { .. })
        ));
    }
}
