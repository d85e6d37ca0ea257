//! Encoders for the messages warpdrive writes itself: as a server to clients
//! (authentication, status, synthesised completions, errors) and as a client to origins
//! (startup, authentication responses, the statements it prepares on its own).

use bytes::{BufMut, BytesMut};

use super::backend::{ErrorFields, TransactionStatus, auth_code, field, tag as backend_tag};
use super::frontend::{Target, tag as frontend_tag};
use super::startup::{CANCEL_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE};

/// Appends one tagged message whose body `write_body` writes; the length is filled in
/// afterwards.
pub fn message(buf: &mut BytesMut, tag: u8, write_body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let length_at = buf.len();
    buf.put_i32(0);
    write_body(buf);
    let length = (buf.len() - length_at) as i32;
    buf[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
}

fn untagged(buf: &mut BytesMut, write_body: impl FnOnce(&mut BytesMut)) {
    let length_at = buf.len();
    buf.put_i32(0);
    write_body(buf);
    let length = (buf.len() - length_at) as i32;
    buf[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
}

fn cstr(buf: &mut BytesMut, text: &[u8]) {
    buf.put_slice(text);
    buf.put_u8(0);
}

// ---- server side: warpdrive answering a client ----

/// AuthenticationOk.
pub fn authentication_ok(buf: &mut BytesMut) {
    message(buf, backend_tag::AUTHENTICATION, |b| {
        b.put_i32(auth_code::OK)
    });
}

/// AuthenticationCleartextPassword.
pub fn authentication_cleartext(buf: &mut BytesMut) {
    message(buf, backend_tag::AUTHENTICATION, |b| {
        b.put_i32(auth_code::CLEARTEXT_PASSWORD)
    });
}

/// AuthenticationMD5Password with its salt.
pub fn authentication_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    message(buf, backend_tag::AUTHENTICATION, |b| {
        b.put_i32(auth_code::MD5_PASSWORD);
        b.put_slice(&salt);
    });
}

/// AuthenticationSASL offering these mechanisms.
pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    message(buf, backend_tag::AUTHENTICATION, |b| {
        b.put_i32(auth_code::SASL);
        for mechanism in mechanisms {
            cstr(b, mechanism.as_bytes());
        }
        b.put_u8(0);
    });
}

/// AuthenticationSASLContinue.
pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    message(buf, backend_tag::AUTHENTICATION, |b| {
        b.put_i32(auth_code::SASL_CONTINUE);
        b.put_slice(data);
    });
}

/// AuthenticationSASLFinal.
pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    message(buf, backend_tag::AUTHENTICATION, |b| {
        b.put_i32(auth_code::SASL_FINAL);
        b.put_slice(data);
    });
}

/// ParameterStatus.
pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    parameter_status_bytes(buf, name.as_bytes(), value.as_bytes());
}

/// ParameterStatus from raw bytes, as an origin reported it.
pub fn parameter_status_bytes(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    message(buf, backend_tag::PARAMETER_STATUS, |b| {
        cstr(b, name);
        cstr(b, value);
    });
}

/// BackendKeyData.
pub fn backend_key_data(buf: &mut BytesMut, process_id: i32, secret_key: &[u8]) {
    message(buf, backend_tag::BACKEND_KEY_DATA, |b| {
        b.put_i32(process_id);
        b.put_slice(secret_key);
    });
}

/// ReadyForQuery.
pub fn ready_for_query(buf: &mut BytesMut, status: TransactionStatus) {
    message(buf, backend_tag::READY_FOR_QUERY, |b| {
        b.put_u8(status.byte())
    });
}

/// ErrorResponse with severity, SQLSTATE, message and an optional hint.
pub fn error_response(
    buf: &mut BytesMut,
    severity: &str,
    code: &str,
    text: &str,
    hint: Option<&str>,
) {
    message(buf, backend_tag::ERROR_RESPONSE, |b| {
        b.put_u8(field::SEVERITY);
        cstr(b, severity.as_bytes());
        b.put_u8(field::SEVERITY_NONLOCALIZED);
        cstr(b, severity.as_bytes());
        b.put_u8(field::CODE);
        cstr(b, code.as_bytes());
        b.put_u8(field::MESSAGE);
        cstr(b, text.as_bytes());
        if let Some(hint) = hint {
            b.put_u8(field::HINT);
            cstr(b, hint.as_bytes());
        }
        b.put_u8(0);
    });
}

/// An origin's ErrorResponse with every field kept but the severity replaced (a FATAL
/// that ends an origin connection is only an ERROR for the client, whose session goes
/// on).
pub fn error_response_with_severity(buf: &mut BytesMut, fields: &ErrorFields, severity: &str) {
    message(buf, backend_tag::ERROR_RESPONSE, |b| {
        for (code, value) in fields.fields() {
            b.put_u8(*code);
            match *code {
                field::SEVERITY | field::SEVERITY_NONLOCALIZED => cstr(b, severity.as_bytes()),
                _ => cstr(b, value),
            }
        }
        b.put_u8(0);
    });
}

/// NegotiateProtocolVersion: the newest protocol version supported, and the protocol
/// options (`_pq_.*`) not recognised. PostgreSQL sends the whole version number
/// (`major << 16 | minor`: 196608 for 3.0), though the protocol documentation speaks of
/// the minor version; clients check it as PostgreSQL sends it.
pub fn negotiate_protocol_version(
    buf: &mut BytesMut,
    major: u16,
    minor: u16,
    unrecognised: &[&str],
) {
    message(buf, backend_tag::NEGOTIATE_PROTOCOL_VERSION, |b| {
        b.put_i32((i32::from(major) << 16) | i32::from(minor));
        b.put_i32(unrecognised.len() as i32);
        for option in unrecognised {
            cstr(b, option.as_bytes());
        }
    });
}

/// ParseComplete.
pub fn parse_complete(buf: &mut BytesMut) {
    message(buf, backend_tag::PARSE_COMPLETE, |_| {});
}

/// BindComplete.
pub fn bind_complete(buf: &mut BytesMut) {
    message(buf, backend_tag::BIND_COMPLETE, |_| {});
}

/// CloseComplete.
pub fn close_complete(buf: &mut BytesMut) {
    message(buf, backend_tag::CLOSE_COMPLETE, |_| {});
}

/// CommandComplete with its tag.
pub fn command_complete(buf: &mut BytesMut, command_tag: &str) {
    message(buf, backend_tag::COMMAND_COMPLETE, |b| {
        cstr(b, command_tag.as_bytes())
    });
}

/// EmptyQueryResponse.
pub fn empty_query_response(buf: &mut BytesMut) {
    message(buf, backend_tag::EMPTY_QUERY_RESPONSE, |_| {});
}

// ---- client side: warpdrive talking to an origin ----

/// StartupMessage for protocol 3.0.
pub fn startup_message(buf: &mut BytesMut, parameters: &[(&str, &str)]) {
    untagged(buf, |b| {
        b.put_i32(PROTOCOL_3_0);
        for (name, value) in parameters {
            cstr(b, name.as_bytes());
            cstr(b, value.as_bytes());
        }
        b.put_u8(0);
    });
}

/// SSLRequest.
pub fn ssl_request(buf: &mut BytesMut) {
    untagged(buf, |b| b.put_i32(SSL_REQUEST_CODE));
}

/// CancelRequest.
pub fn cancel_request(buf: &mut BytesMut, process_id: i32, secret_key: &[u8]) {
    untagged(buf, |b| {
        b.put_i32(CANCEL_REQUEST_CODE);
        b.put_i32(process_id);
        b.put_slice(secret_key);
    });
}

/// PasswordMessage (cleartext or md5 response).
pub fn password_message(buf: &mut BytesMut, password: &[u8]) {
    message(buf, frontend_tag::PASSWORD, |b| cstr(b, password));
}

/// SASLInitialResponse.
pub fn sasl_initial_response(buf: &mut BytesMut, mechanism: &str, data: &[u8]) {
    message(buf, frontend_tag::PASSWORD, |b| {
        cstr(b, mechanism.as_bytes());
        b.put_i32(data.len() as i32);
        b.put_slice(data);
    });
}

/// SASLResponse.
pub fn sasl_response(buf: &mut BytesMut, data: &[u8]) {
    message(buf, frontend_tag::PASSWORD, |b| b.put_slice(data));
}

/// Query.
pub fn query(buf: &mut BytesMut, sql: &str) {
    query_raw(buf, sql.as_bytes());
}

/// Query with its text as received.
pub fn query_raw(buf: &mut BytesMut, sql: &[u8]) {
    message(buf, frontend_tag::QUERY, |b| cstr(b, sql));
}

/// Parse.
pub fn parse(buf: &mut BytesMut, name: &[u8], sql: &[u8], parameter_types: &[u32]) {
    let mut types = BytesMut::with_capacity(2 + 4 * parameter_types.len());
    types.put_u16(parameter_types.len() as u16);
    parameter_types.iter().for_each(|oid| types.put_u32(*oid));
    parse_raw(buf, name, sql, &types);
}

/// Parse with the parameter types as a client sent them (Int16 count, Int32 OIDs).
pub fn parse_raw(buf: &mut BytesMut, name: &[u8], sql: &[u8], parameter_types: &[u8]) {
    message(buf, frontend_tag::PARSE, |b| {
        cstr(b, name);
        cstr(b, sql);
        b.put_slice(parameter_types);
    });
}

/// Bind with per-parameter formats, values (`None` is NULL) and result formats.
pub fn bind(
    buf: &mut BytesMut,
    portal: &[u8],
    statement: &[u8],
    parameter_formats: &[i16],
    values: &[Option<&[u8]>],
    result_formats: &[i16],
) {
    message(buf, frontend_tag::BIND, |b| {
        cstr(b, portal);
        cstr(b, statement);
        b.put_u16(parameter_formats.len() as u16);
        parameter_formats.iter().for_each(|f| b.put_i16(*f));
        b.put_u16(values.len() as u16);
        for value in values {
            match value {
                Some(value) => {
                    b.put_i32(value.len() as i32);
                    b.put_slice(value);
                }
                None => b.put_i32(-1),
            }
        }
        b.put_u16(result_formats.len() as u16);
        result_formats.iter().for_each(|f| b.put_i16(*f));
    });
}

/// Bind with its arguments as a client sent them (everything after the statement name).
pub fn bind_raw(buf: &mut BytesMut, portal: &[u8], statement: &[u8], arguments: &[u8]) {
    message(buf, frontend_tag::BIND, |b| {
        cstr(b, portal);
        cstr(b, statement);
        b.put_slice(arguments);
    });
}

/// Describe.
pub fn describe(buf: &mut BytesMut, target: Target, name: &[u8]) {
    message(buf, frontend_tag::DESCRIBE, |b| {
        b.put_u8(match target {
            Target::Statement => b'S',
            Target::Portal => b'P',
        });
        cstr(b, name);
    });
}

/// Execute.
pub fn execute(buf: &mut BytesMut, portal: &[u8], max_rows: i32) {
    message(buf, frontend_tag::EXECUTE, |b| {
        cstr(b, portal);
        b.put_i32(max_rows);
    });
}

/// Close.
pub fn close(buf: &mut BytesMut, target: Target, name: &[u8]) {
    message(buf, frontend_tag::CLOSE, |b| {
        b.put_u8(match target {
            Target::Statement => b'S',
            Target::Portal => b'P',
        });
        cstr(b, name);
    });
}

/// Sync.
pub fn sync(buf: &mut BytesMut) {
    message(buf, frontend_tag::SYNC, |_| {});
}

/// Flush.
pub fn flush(buf: &mut BytesMut) {
    message(buf, frontend_tag::FLUSH, |_| {});
}

/// Terminate.
pub fn terminate(buf: &mut BytesMut) {
    message(buf, frontend_tag::TERMINATE, |_| {});
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::wire::pg::backend::{Authentication, BackendMessage};
    use crate::wire::pg::frontend::{FrontendMessage, Target};
    use crate::wire::pg::startup::{StartupPacket, split_startup};
    use crate::wire::pg::{Frame, split_frame};

    /// The one frame `write` encodes.
    fn frame(write: impl FnOnce(&mut BytesMut)) -> Frame {
        let mut buf = BytesMut::new();
        write(&mut buf);
        let frame = split_frame(&mut buf, 1 << 20)
            .expect("well-formed")
            .expect("whole");
        assert!(buf.is_empty(), "exactly one message");
        frame
    }

    fn backend(write: impl FnOnce(&mut BytesMut)) -> BackendMessage {
        BackendMessage::decode(&frame(write)).expect("decodes")
    }

    fn frontend(write: impl FnOnce(&mut BytesMut)) -> FrontendMessage {
        FrontendMessage::decode(frame(write)).expect("decodes")
    }

    fn startup(write: impl FnOnce(&mut BytesMut)) -> StartupPacket {
        let mut buf = BytesMut::new();
        write(&mut buf);
        let packet = split_startup(&mut buf)
            .expect("well-formed")
            .expect("whole");
        assert!(buf.is_empty());
        packet
    }

    #[test]
    fn authentication_requests_round_trip() {
        use Authentication as A;
        let auth = |write: fn(&mut BytesMut)| match backend(write) {
            BackendMessage::Authentication(request) => request,
            other => panic!("{other:?}"),
        };
        assert_eq!(auth(authentication_ok), A::Ok);
        assert_eq!(auth(authentication_cleartext), A::CleartextPassword);
        assert_eq!(
            auth(|b| authentication_md5(b, [1, 2, 3, 4])),
            A::Md5Password { salt: [1, 2, 3, 4] }
        );
        let A::Sasl { mechanisms } = auth(|b| authentication_sasl(b, &["SCRAM-SHA-256"])) else {
            panic!("SASL")
        };
        assert_eq!(mechanisms, vec![Bytes::from_static(b"SCRAM-SHA-256")]);
        assert_eq!(
            auth(|b| authentication_sasl_continue(b, b"r=abc")),
            A::SaslContinue(Bytes::from_static(b"r=abc"))
        );
        assert_eq!(
            auth(|b| authentication_sasl_final(b, b"v=xyz")),
            A::SaslFinal(Bytes::from_static(b"v=xyz"))
        );
    }

    #[test]
    fn session_messages_round_trip() {
        assert_eq!(
            backend(|b| parameter_status(b, "TimeZone", "UTC")),
            BackendMessage::ParameterStatus {
                name: Bytes::from_static(b"TimeZone"),
                value: Bytes::from_static(b"UTC"),
            }
        );
        assert_eq!(
            backend(|b| parameter_status_bytes(b, b"a", b"")),
            BackendMessage::ParameterStatus {
                name: Bytes::from_static(b"a"),
                value: Bytes::new(),
            }
        );
        assert_eq!(
            backend(|b| backend_key_data(b, 42, &[9, 8, 7, 6])),
            BackendMessage::BackendKeyData {
                process_id: 42,
                secret_key: Bytes::from_static(&[9, 8, 7, 6]),
            }
        );
        for status in [
            TransactionStatus::Idle,
            TransactionStatus::InTransaction,
            TransactionStatus::Failed,
        ] {
            assert_eq!(
                backend(|b| ready_for_query(b, status)),
                BackendMessage::ReadyForQuery(status)
            );
        }
        assert_eq!(
            backend(|b| command_complete(b, "SELECT 3")),
            BackendMessage::CommandComplete {
                tag: Bytes::from_static(b"SELECT 3"),
            }
        );
        for (write, tag) in [
            (parse_complete as fn(&mut BytesMut), b'1'),
            (bind_complete, b'2'),
            (close_complete, b'3'),
            (empty_query_response, b'I'),
        ] {
            let frame = frame(write);
            assert_eq!((frame.tag(), frame.body().len()), (tag, 0));
        }
    }

    #[test]
    fn errors_round_trip_with_every_field() {
        let BackendMessage::ErrorResponse(fields) =
            backend(|b| error_response(b, "FATAL", "57P01", "shutting down", Some("reconnect")))
        else {
            panic!("an error")
        };
        assert!(fields.is_fatal());
        assert_eq!(fields.code(), b"57P01");
        assert_eq!(fields.message(), "shutting down");
        assert_eq!(fields.get(b'H').map(|h| &h[..]), Some(&b"reconnect"[..]));
        let BackendMessage::ErrorResponse(again) =
            backend(|b| error_response_with_severity(b, &fields, "ERROR"))
        else {
            panic!("an error")
        };
        assert!(!again.is_fatal());
        assert_eq!(
            (again.code(), again.message()),
            (fields.code(), fields.message())
        );
        assert_eq!(again.get(b'H'), fields.get(b'H'));
    }

    #[test]
    fn protocol_negotiation_round_trips() {
        let frame = frame(|b| negotiate_protocol_version(b, 3, 0, &["_pq_.x", "_pq_.y"]));
        assert_eq!(frame.tag(), b'v');
        let body = frame.body();
        assert_eq!(&body[..8], &[0, 3, 0, 0, 0, 0, 0, 2]);
        assert_eq!(&body[8..], b"_pq_.x\0_pq_.y\0");
    }

    #[test]
    fn startup_packets_round_trip() {
        let StartupPacket::Startup(message) =
            startup(|b| startup_message(b, &[("user", "app"), ("database", "shop")]))
        else {
            panic!("a startup message")
        };
        assert_eq!(message.minor_version, 0);
        assert_eq!(
            message.parameters,
            vec![
                ("user".to_owned(), "app".to_owned()),
                ("database".to_owned(), "shop".to_owned())
            ]
        );
        assert!(matches!(startup(ssl_request), StartupPacket::SslRequest));
        let StartupPacket::Cancel(cancel) = startup(|b| cancel_request(b, 7, &[1, 2, 3, 4])) else {
            panic!("a cancel")
        };
        assert_eq!(
            (cancel.process_id, &cancel.secret_key[..]),
            (7, &[1, 2, 3, 4][..])
        );
    }

    #[test]
    fn client_messages_round_trip() {
        let FrontendMessage::Query(query) = frontend(|b| query(b, "SELECT 1")) else {
            panic!("a query")
        };
        assert_eq!(&query.sql[..], b"SELECT 1");
        let FrontendMessage::Query(raw) = frontend(|b| query_raw(b, b"SELECT 2")) else {
            panic!("a query")
        };
        assert_eq!(&raw.sql[..], b"SELECT 2");
        let FrontendMessage::Parse(parsed) = frontend(|b| parse(b, b"s1", b"SELECT $1", &[23]))
        else {
            panic!("a parse")
        };
        assert_eq!(
            (&parsed.name[..], &parsed.sql[..]),
            (&b"s1"[..], &b"SELECT $1"[..])
        );
        assert_eq!(&parsed.parameter_types[..], &[0, 1, 0, 0, 0, 23]);
        let FrontendMessage::Parse(reparsed) =
            frontend(|b| parse_raw(b, b"s2", b"SELECT 1", &parsed.parameter_types))
        else {
            panic!("a parse")
        };
        assert_eq!(reparsed.parameter_types, parsed.parameter_types);
        let FrontendMessage::Bind(bound) =
            frontend(|b| bind(b, b"p", b"s1", &[1], &[Some(b"\0\0\0\x05"), None], &[0]))
        else {
            panic!("a bind")
        };
        assert_eq!(
            (&bound.portal[..], &bound.statement[..]),
            (&b"p"[..], &b"s1"[..])
        );
        let FrontendMessage::Bind(rebound) =
            frontend(|b| bind_raw(b, b"", b"s1", &bound.arguments))
        else {
            panic!("a bind")
        };
        assert_eq!(rebound.arguments, bound.arguments);
        for target in [Target::Statement, Target::Portal] {
            let FrontendMessage::Describe(described) = frontend(|b| describe(b, target, b"x"))
            else {
                panic!("a describe")
            };
            assert_eq!((described.target, &described.name[..]), (target, &b"x"[..]));
            let FrontendMessage::Close(closed) = frontend(|b| close(b, target, b"y")) else {
                panic!("a close")
            };
            assert_eq!((closed.target, &closed.name[..]), (target, &b"y"[..]));
        }
        let FrontendMessage::Execute(executed) = frontend(|b| execute(b, b"p", 10)) else {
            panic!("an execute")
        };
        assert_eq!((&executed.portal[..], executed.max_rows), (&b"p"[..], 10));
        assert!(matches!(frontend(sync), FrontendMessage::Sync(_)));
        assert!(matches!(frontend(flush), FrontendMessage::Flush(_)));
        assert!(matches!(frontend(terminate), FrontendMessage::Terminate(_)));
    }

    #[test]
    fn password_messages_round_trip() {
        for write in [
            (|b: &mut BytesMut| password_message(b, b"secret")) as fn(&mut BytesMut),
            |b| sasl_initial_response(b, "SCRAM-SHA-256", b"n,,n=,r=abc"),
            |b| sasl_response(b, b"c=biws,r=abc,p=xyz"),
        ] {
            assert!(matches!(frontend(write), FrontendMessage::Password(_)));
        }
        let initial = frame(|b| sasl_initial_response(b, "SCRAM-SHA-256", b"n,,n=,r=abc"));
        assert_eq!(&initial.body()[..], b"SCRAM-SHA-256\0\0\0\0\x0bn,,n=,r=abc");
        assert_eq!(&frame(|b| password_message(b, b"pw")).body()[..], b"pw\0");
        assert_eq!(
            &frame(|b| sasl_response(b, b"c=biws")).body()[..],
            b"c=biws"
        );
    }
}
