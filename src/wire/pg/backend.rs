//! Messages a server sends, decoded where warpdrive must look inside them.
//!
//! Most backend messages are forwarded without being looked at; [`BackendMessage::decode`]
//! is cheap (`Bytes` slices, no copies) and only checks the layout of the messages whose
//! fields warpdrive reads: authentication requests, BackendKeyData, ParameterStatus,
//! ReadyForQuery, ErrorResponse/NoticeResponse and CommandComplete.

use bytes::Bytes;

use super::{Frame, Reader, WireError};

/// Message type bytes of backend messages.
pub mod tag {
    /// Authentication request (all kinds).
    pub const AUTHENTICATION: u8 = b'R';
    /// BackendKeyData.
    pub const BACKEND_KEY_DATA: u8 = b'K';
    /// BindComplete.
    pub const BIND_COMPLETE: u8 = b'2';
    /// CloseComplete.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// CommandComplete.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// CopyData.
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone.
    pub const COPY_DONE: u8 = b'c';
    /// CopyInResponse.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// CopyOutResponse.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// CopyBothResponse.
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// DataRow.
    pub const DATA_ROW: u8 = b'D';
    /// EmptyQueryResponse.
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    /// ErrorResponse.
    pub const ERROR_RESPONSE: u8 = b'E';
    /// FunctionCallResponse.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    /// NegotiateProtocolVersion.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    /// NoData.
    pub const NO_DATA: u8 = b'n';
    /// NoticeResponse.
    pub const NOTICE_RESPONSE: u8 = b'N';
    /// NotificationResponse.
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    /// ParameterDescription.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// ParameterStatus.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// ParseComplete.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// PortalSuspended.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// ReadyForQuery.
    pub const READY_FOR_QUERY: u8 = b'Z';
    /// RowDescription.
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// Authentication request codes (the Int32 after the 'R').
pub mod auth_code {
    /// AuthenticationOk.
    pub const OK: i32 = 0;
    /// AuthenticationCleartextPassword.
    pub const CLEARTEXT_PASSWORD: i32 = 3;
    /// AuthenticationMD5Password.
    pub const MD5_PASSWORD: i32 = 5;
    /// AuthenticationSASL.
    pub const SASL: i32 = 10;
    /// AuthenticationSASLContinue.
    pub const SASL_CONTINUE: i32 = 11;
    /// AuthenticationSASLFinal.
    pub const SASL_FINAL: i32 = 12;
}

/// An authentication request from a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authentication {
    /// Authentication succeeded.
    Ok,
    /// Send the password in clear.
    CleartextPassword,
    /// Send `md5(md5(password + user) + salt)`.
    Md5Password {
        /// The salt.
        salt: [u8; 4],
    },
    /// Start SASL with one of these mechanisms.
    Sasl {
        /// Mechanism names.
        mechanisms: Vec<Bytes>,
    },
    /// SASL challenge.
    SaslContinue(Bytes),
    /// SASL outcome with the server's signature.
    SaslFinal(Bytes),
    /// A method warpdrive does not implement (Kerberos, GSSAPI, SSPI).
    Unsupported(i32),
}

/// The transaction status in ReadyForQuery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TransactionStatus {
    /// `'I'`: not in a transaction block.
    Idle,
    /// `'T'`: in a transaction block.
    InTransaction,
    /// `'E'`: in a failed transaction block (queries refused until it ends).
    Failed,
}

impl TransactionStatus {
    /// The status byte.
    pub fn byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse, as sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorFields {
    fields: Vec<(u8, Bytes)>,
}

/// Field type bytes of ErrorResponse and NoticeResponse.
pub mod field {
    /// Severity, localized.
    pub const SEVERITY: u8 = b'S';
    /// Severity, never localized.
    pub const SEVERITY_NONLOCALIZED: u8 = b'V';
    /// SQLSTATE code.
    pub const CODE: u8 = b'C';
    /// Primary message.
    pub const MESSAGE: u8 = b'M';
    /// Detail.
    pub const DETAIL: u8 = b'D';
    /// Hint.
    pub const HINT: u8 = b'H';
}

impl ErrorFields {
    /// Every field, in the order sent.
    pub fn fields(&self) -> &[(u8, Bytes)] {
        &self.fields
    }

    /// The value of a field.
    pub fn get(&self, field: u8) -> Option<&Bytes> {
        self.fields
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, v)| v)
    }

    /// The SQLSTATE code.
    pub fn code(&self) -> &[u8] {
        self.get(field::CODE).map(|v| &v[..]).unwrap_or(b"")
    }

    /// The primary message, lossily decoded for logs and error text.
    pub fn message(&self) -> String {
        self.get(field::MESSAGE)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    }

    /// Whether the severity is FATAL or PANIC: the server closes the connection.
    pub fn is_fatal(&self) -> bool {
        let severity = self
            .get(field::SEVERITY_NONLOCALIZED)
            .or_else(|| self.get(field::SEVERITY));
        matches!(severity.map(|v| &v[..]), Some(b"FATAL" | b"PANIC"))
    }
}

/// A backend message; the frame itself stays with the caller for forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendMessage {
    /// An authentication request.
    Authentication(Authentication),
    /// The key that cancels this backend's queries.
    BackendKeyData {
        /// Process id.
        process_id: i32,
        /// Secret key.
        secret_key: Bytes,
    },
    /// A run-time parameter's value.
    ParameterStatus {
        /// Its name.
        name: Bytes,
        /// Its value.
        value: Bytes,
    },
    /// Ready for the next query, with the transaction status.
    ReadyForQuery(TransactionStatus),
    /// An error.
    ErrorResponse(ErrorFields),
    /// A notice.
    NoticeResponse(ErrorFields),
    /// A command finished; its tag (`SELECT 3`, `INSERT 0 1`).
    CommandComplete {
        /// The command tag.
        tag: Bytes,
    },
    /// Any other message; look at the frame's tag.
    Other,
}

impl BackendMessage {
    /// Decodes the messages warpdrive looks inside; everything else is `Other`.
    pub fn decode(frame: &Frame) -> Result<BackendMessage, WireError> {
        let body = frame.body();
        Ok(match frame.tag() {
            tag::AUTHENTICATION => BackendMessage::Authentication(decode_authentication(body)?),
            tag::BACKEND_KEY_DATA => {
                let mut reader = Reader::new("BackendKeyData", body);
                let process_id = reader.i32()?;
                BackendMessage::BackendKeyData {
                    process_id,
                    secret_key: reader.rest(),
                }
            }
            tag::PARAMETER_STATUS => {
                let mut reader = Reader::new("ParameterStatus", body);
                let name = reader.cstr()?;
                let value = reader.cstr()?;
                reader.finish()?;
                BackendMessage::ParameterStatus { name, value }
            }
            tag::READY_FOR_QUERY => {
                let mut reader = Reader::new("ReadyForQuery", body);
                let status = match reader.u8()? {
                    b'I' => TransactionStatus::Idle,
                    b'T' => TransactionStatus::InTransaction,
                    b'E' => TransactionStatus::Failed,
                    _ => {
                        return Err(WireError::Malformed {
                            message: "ReadyForQuery",
                            problem: "unknown transaction status",
                        });
                    }
                };
                reader.finish()?;
                BackendMessage::ReadyForQuery(status)
            }
            tag::ERROR_RESPONSE => {
                BackendMessage::ErrorResponse(decode_fields("ErrorResponse", body)?)
            }
            tag::NOTICE_RESPONSE => {
                BackendMessage::NoticeResponse(decode_fields("NoticeResponse", body)?)
            }
            tag::COMMAND_COMPLETE => {
                let mut reader = Reader::new("CommandComplete", body);
                let tag = reader.cstr()?;
                reader.finish()?;
                BackendMessage::CommandComplete { tag }
            }
            _ => BackendMessage::Other,
        })
    }
}

/// The column values of a DataRow (`None` for NULL), in text or binary as the query
/// asked. Decoded only where warpdrive reads rows itself (its own catalog queries); rows
/// relayed to clients are never decoded.
pub fn decode_data_row(frame: &Frame) -> Result<Vec<Option<Bytes>>, WireError> {
    if frame.tag() != tag::DATA_ROW {
        return Err(WireError::UnexpectedTag { tag: frame.tag() });
    }
    let mut reader = Reader::new("DataRow", frame.body());
    let columns = reader.u16()?;
    let mut values = Vec::with_capacity(usize::from(columns));
    for _ in 0..columns {
        let len = reader.i32()?;
        values.push(match usize::try_from(len) {
            Ok(len) => Some(reader.bytes(len)?),
            Err(_) if len == -1 => None,
            Err(_) => {
                return Err(WireError::Malformed {
                    message: "DataRow",
                    problem: "negative column length other than -1",
                });
            }
        });
    }
    reader.finish()?;
    Ok(values)
}

fn decode_authentication(body: Bytes) -> Result<Authentication, WireError> {
    let mut reader = Reader::new("Authentication", body);
    let request = match reader.i32()? {
        auth_code::OK => Authentication::Ok,
        auth_code::CLEARTEXT_PASSWORD => Authentication::CleartextPassword,
        auth_code::MD5_PASSWORD => {
            let salt = reader.bytes(4)?;
            Authentication::Md5Password {
                salt: [salt[0], salt[1], salt[2], salt[3]],
            }
        }
        auth_code::SASL => {
            let mut mechanisms = Vec::new();
            loop {
                let mechanism = reader.cstr()?;
                if mechanism.is_empty() {
                    break;
                }
                mechanisms.push(mechanism);
            }
            Authentication::Sasl { mechanisms }
        }
        auth_code::SASL_CONTINUE => return Ok(Authentication::SaslContinue(reader.rest())),
        auth_code::SASL_FINAL => return Ok(Authentication::SaslFinal(reader.rest())),
        other => return Ok(Authentication::Unsupported(other)),
    };
    reader.finish()?;
    Ok(request)
}

fn decode_fields(message: &'static str, body: Bytes) -> Result<ErrorFields, WireError> {
    let mut reader = Reader::new(message, body);
    let mut fields = Vec::new();
    loop {
        let field = reader.u8()?;
        if field == 0 {
            break;
        }
        fields.push((field, reader.cstr()?));
    }
    reader.finish()?;
    Ok(ErrorFields { fields })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pg::{encode, split_frame};
    use bytes::BytesMut;

    fn one(buf: BytesMut) -> BackendMessage {
        let mut buf = buf;
        let frame = split_frame(&mut buf, 1 << 20)
            .expect("valid")
            .expect("whole");
        BackendMessage::decode(&frame).expect("decodes")
    }

    #[test]
    fn data_rows_decode_with_nulls_and_refuse_overruns() {
        use bytes::BufMut;
        let row = |write: &dyn Fn(&mut BytesMut)| {
            let mut buf = BytesMut::new();
            encode::message(&mut buf, tag::DATA_ROW, |b| write(b));
            split_frame(&mut buf, 1 << 20)
                .expect("valid")
                .expect("whole")
        };
        let good = row(&|b| {
            b.put_u16(2);
            b.put_i32(3);
            b.put_slice(b"abc");
            b.put_i32(-1);
        });
        assert_eq!(
            decode_data_row(&good).expect("decodes"),
            vec![Some(Bytes::from_static(b"abc")), None]
        );
        let overrun = row(&|b| {
            b.put_u16(1);
            b.put_i32(9);
            b.put_slice(b"abc");
        });
        assert!(decode_data_row(&overrun).is_err());
        let negative = row(&|b| {
            b.put_u16(1);
            b.put_i32(-2);
        });
        assert!(decode_data_row(&negative).is_err());
    }

    #[test]
    fn error_response_round_trip() {
        let mut buf = BytesMut::new();
        encode::error_response(
            &mut buf,
            "FATAL",
            "28P01",
            "password authentication failed",
            None,
        );
        let BackendMessage::ErrorResponse(fields) = one(buf) else {
            panic!("not an error")
        };
        assert_eq!(fields.code(), b"28P01");
        assert_eq!(fields.message(), "password authentication failed");
        assert!(fields.is_fatal());
    }

    #[test]
    fn ready_for_query_and_parameter_status() {
        let mut buf = BytesMut::new();
        encode::ready_for_query(&mut buf, TransactionStatus::Failed);
        assert_eq!(
            one(buf),
            BackendMessage::ReadyForQuery(TransactionStatus::Failed)
        );
        let mut buf = BytesMut::new();
        encode::parameter_status(&mut buf, "client_encoding", "UTF8");
        assert_eq!(
            one(buf),
            BackendMessage::ParameterStatus {
                name: Bytes::from_static(b"client_encoding"),
                value: Bytes::from_static(b"UTF8"),
            }
        );
        let mut bad = BytesMut::from(&b"Z\x00\x00\x00\x05X"[..]);
        let frame = split_frame(&mut bad, 64).expect("valid").expect("whole");
        assert!(BackendMessage::decode(&frame).is_err());
    }

    #[test]
    fn authentication_requests() {
        let mut buf = BytesMut::new();
        encode::authentication_md5(&mut buf, [1, 2, 3, 4]);
        assert_eq!(
            one(buf),
            BackendMessage::Authentication(Authentication::Md5Password { salt: [1, 2, 3, 4] })
        );
        let mut buf = BytesMut::new();
        encode::authentication_sasl(&mut buf, &["SCRAM-SHA-256"]);
        assert_eq!(
            one(buf),
            BackendMessage::Authentication(Authentication::Sasl {
                mechanisms: vec![Bytes::from_static(b"SCRAM-SHA-256")]
            })
        );
        let mut buf = BytesMut::new();
        encode::authentication_ok(&mut buf);
        assert_eq!(one(buf), BackendMessage::Authentication(Authentication::Ok));
    }
}
