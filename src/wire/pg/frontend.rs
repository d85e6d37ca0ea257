//! Messages a client sends after startup, decoded once at the edge.
//!
//! Each message keeps its [`Frame`] so that it can be forwarded unchanged; the fields are
//! `Bytes` slices of that frame. Statement-name rewriting (warpdrive names statements on
//! the origin itself) re-encodes only the header part of Parse, Bind, Describe and Close
//! and reuses the rest of the body.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Frame, Reader, WireError};

/// Message type bytes of frontend messages.
pub mod tag {
    /// Bind.
    pub const BIND: u8 = b'B';
    /// Close.
    pub const CLOSE: u8 = b'C';
    /// CopyData.
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone.
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail.
    pub const COPY_FAIL: u8 = b'f';
    /// Describe.
    pub const DESCRIBE: u8 = b'D';
    /// Execute.
    pub const EXECUTE: u8 = b'E';
    /// Flush.
    pub const FLUSH: u8 = b'H';
    /// FunctionCall.
    pub const FUNCTION_CALL: u8 = b'F';
    /// Parse.
    pub const PARSE: u8 = b'P';
    /// PasswordMessage, SASLInitialResponse and SASLResponse share this byte.
    pub const PASSWORD: u8 = b'p';
    /// Query (simple protocol).
    pub const QUERY: u8 = b'Q';
    /// Sync.
    pub const SYNC: u8 = b'S';
    /// Terminate.
    pub const TERMINATE: u8 = b'X';
}

/// Which object a Describe or Close names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A prepared statement (`'S'`).
    Statement,
    /// A portal (`'P'`).
    Portal,
}

impl Target {
    fn decode(message: &'static str, byte: u8) -> Result<Target, WireError> {
        match byte {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            _ => Err(WireError::Malformed {
                message,
                problem: "target must be 'S' or 'P'",
            }),
        }
    }

    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// FunctionCall: a function called by OID (the "fast path"); the arguments stay in the
/// frame, which is forwarded as is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionCall {
    /// The frame as received.
    pub frame: Frame,
    /// The function's OID.
    pub function: u32,
}

/// Query: one simple-protocol query string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The frame as received.
    pub frame: Frame,
    /// The SQL text without its terminator, as sent.
    pub sql: Bytes,
}

/// Parse: prepare a statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parse {
    /// The frame as received.
    pub frame: Frame,
    /// Statement name; empty for the unnamed statement.
    pub name: Bytes,
    /// The SQL text.
    pub sql: Bytes,
    /// The parameter type OIDs as sent: an Int16 count and that many Int32 OIDs.
    pub parameter_types: Bytes,
}

/// Bind: create a portal from a statement and parameter values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// The frame as received.
    pub frame: Frame,
    /// Portal name; empty for the unnamed portal.
    pub portal: Bytes,
    /// Statement name; empty for the unnamed statement.
    pub statement: Bytes,
    /// Everything after the statement name: parameter formats, parameter values and
    /// result formats, exactly as sent (the part of a Bind that changes its answer).
    pub arguments: Bytes,
}

/// Describe a statement or portal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Describe {
    /// The frame as received.
    pub frame: Frame,
    /// Statement or portal.
    pub target: Target,
    /// Its name.
    pub name: Bytes,
}

/// Execute a portal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Execute {
    /// The frame as received.
    pub frame: Frame,
    /// Portal name.
    pub portal: Bytes,
    /// Row limit; 0 means all rows.
    pub max_rows: i32,
}

/// Close a statement or portal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    /// The frame as received.
    pub frame: Frame,
    /// Statement or portal.
    pub target: Target,
    /// Its name.
    pub name: Bytes,
}

/// A message from a client after startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrontendMessage {
    /// Simple query.
    Query(Query),
    /// Parse.
    Parse(Parse),
    /// Bind.
    Bind(Bind),
    /// Describe.
    Describe(Describe),
    /// Execute.
    Execute(Execute),
    /// Close.
    Close(Close),
    /// Sync.
    Sync(Frame),
    /// Flush.
    Flush(Frame),
    /// Terminate.
    Terminate(Frame),
    /// CopyData during COPY FROM STDIN.
    CopyData(Frame),
    /// CopyDone.
    CopyDone(Frame),
    /// CopyFail.
    CopyFail(Frame),
    /// FunctionCall (fast-path function call), forwarded as is.
    FunctionCall(FunctionCall),
    /// PasswordMessage, SASLInitialResponse or SASLResponse; which one depends on the
    /// authentication exchange in progress.
    Password(Frame),
}

impl FrontendMessage {
    /// Decodes one frame.
    pub fn decode(frame: Frame) -> Result<FrontendMessage, WireError> {
        let body = frame.body();
        let message = match frame.tag() {
            tag::QUERY => {
                let mut reader = Reader::new("Query", body);
                let sql = reader.cstr()?;
                reader.finish()?;
                FrontendMessage::Query(Query { frame, sql })
            }
            tag::PARSE => {
                let mut reader = Reader::new("Parse", body);
                let name = reader.cstr()?;
                let sql = reader.cstr()?;
                let parameter_types = reader.rest();
                check_parameter_types(&parameter_types)?;
                FrontendMessage::Parse(Parse {
                    frame,
                    name,
                    sql,
                    parameter_types,
                })
            }
            tag::BIND => {
                let mut reader = Reader::new("Bind", body);
                let portal = reader.cstr()?;
                let statement = reader.cstr()?;
                let arguments = reader.rest();
                check_bind_arguments(&arguments)?;
                FrontendMessage::Bind(Bind {
                    frame,
                    portal,
                    statement,
                    arguments,
                })
            }
            tag::DESCRIBE => {
                let mut reader = Reader::new("Describe", body);
                let target = Target::decode("Describe", reader.u8()?)?;
                let name = reader.cstr()?;
                reader.finish()?;
                FrontendMessage::Describe(Describe {
                    frame,
                    target,
                    name,
                })
            }
            tag::EXECUTE => {
                let mut reader = Reader::new("Execute", body);
                let portal = reader.cstr()?;
                let max_rows = reader.i32()?;
                reader.finish()?;
                FrontendMessage::Execute(Execute {
                    frame,
                    portal,
                    max_rows,
                })
            }
            tag::CLOSE => {
                let mut reader = Reader::new("Close", body);
                let target = Target::decode("Close", reader.u8()?)?;
                let name = reader.cstr()?;
                reader.finish()?;
                FrontendMessage::Close(Close {
                    frame,
                    target,
                    name,
                })
            }
            tag::SYNC => empty_body(frame, "Sync", FrontendMessage::Sync)?,
            tag::FLUSH => empty_body(frame, "Flush", FrontendMessage::Flush)?,
            tag::TERMINATE => empty_body(frame, "Terminate", FrontendMessage::Terminate)?,
            tag::COPY_DONE => empty_body(frame, "CopyDone", FrontendMessage::CopyDone)?,
            tag::COPY_DATA => FrontendMessage::CopyData(frame),
            tag::COPY_FAIL => FrontendMessage::CopyFail(frame),
            tag::FUNCTION_CALL => {
                let mut reader = Reader::new("FunctionCall", body);
                let function = reader.u32()?;
                FrontendMessage::FunctionCall(FunctionCall { frame, function })
            }
            tag::PASSWORD => FrontendMessage::Password(frame),
            tag => return Err(WireError::UnexpectedTag { tag }),
        };
        Ok(message)
    }

    /// The frame as received.
    pub fn frame(&self) -> &Frame {
        match self {
            FrontendMessage::Query(m) => &m.frame,
            FrontendMessage::Parse(m) => &m.frame,
            FrontendMessage::Bind(m) => &m.frame,
            FrontendMessage::Describe(m) => &m.frame,
            FrontendMessage::Execute(m) => &m.frame,
            FrontendMessage::Close(m) => &m.frame,
            FrontendMessage::Sync(frame)
            | FrontendMessage::Flush(frame)
            | FrontendMessage::Terminate(frame)
            | FrontendMessage::CopyData(frame)
            | FrontendMessage::CopyDone(frame)
            | FrontendMessage::CopyFail(frame)
            | FrontendMessage::Password(frame) => frame,
            FrontendMessage::FunctionCall(call) => &call.frame,
        }
    }
}

fn empty_body(
    frame: Frame,
    message: &'static str,
    wrap: fn(Frame) -> FrontendMessage,
) -> Result<FrontendMessage, WireError> {
    if frame.body().is_empty() {
        Ok(wrap(frame))
    } else {
        Err(WireError::Malformed {
            message,
            problem: "body must be empty",
        })
    }
}

/// Counts in Parse and Bind are unsigned 16-bit: PostgreSQL accepts up to 65 535
/// parameters.
fn check_parameter_types(types: &Bytes) -> Result<(), WireError> {
    let mut reader = Reader::new("Parse", types.clone());
    let count = reader.u16()?;
    reader.bytes(usize::from(count) * 4)?;
    reader.finish()
}

fn check_bind_arguments(arguments: &Bytes) -> Result<(), WireError> {
    let mut reader = Reader::new("Bind", arguments.clone());
    let formats = reader.u16()?;
    reader.bytes(usize::from(formats) * 2)?;
    let values = reader.u16()?;
    for _ in 0..values {
        let len = reader.i32()?;
        match usize::try_from(len) {
            Ok(len) => {
                reader.bytes(len)?;
            }
            Err(_) if len == -1 => {}
            Err(_) => {
                return Err(WireError::Malformed {
                    message: "Bind",
                    problem: "parameter length below -1",
                });
            }
        }
    }
    let result_formats = reader.u16()?;
    reader.bytes(usize::from(result_formats) * 2)?;
    reader.finish()
}

fn frame_with(tag: u8, write_body: impl FnOnce(&mut BytesMut)) -> Frame {
    let mut buf = BytesMut::new();
    super::encode::message(&mut buf, tag, write_body);
    Frame::from_encoded(buf.freeze())
}

fn put_cstr(buf: &mut BytesMut, text: &[u8]) {
    buf.put_slice(text);
    buf.put_u8(0);
}

impl Parse {
    /// This Parse for a statement of another name.
    pub fn renamed(&self, name: &[u8]) -> Frame {
        let mut buf = BytesMut::new();
        super::encode::parse_raw(&mut buf, name, &self.sql, &self.parameter_types);
        Frame::from_encoded(buf.freeze())
    }
}

impl Bind {
    /// This Bind for a statement of another name (same portal and arguments).
    pub fn with_statement(&self, statement: &[u8]) -> Frame {
        let mut buf = BytesMut::new();
        super::encode::bind_raw(&mut buf, &self.portal, statement, &self.arguments);
        Frame::from_encoded(buf.freeze())
    }
}

impl Describe {
    /// This Describe for another name.
    pub fn renamed(&self, name: &[u8]) -> Frame {
        frame_with(tag::DESCRIBE, |buf| {
            buf.put_u8(self.target.byte());
            put_cstr(buf, name);
        })
    }
}

impl Close {
    /// This Close for another name.
    pub fn renamed(&self, name: &[u8]) -> Frame {
        frame_with(tag::CLOSE, |buf| {
            buf.put_u8(self.target.byte());
            put_cstr(buf, name);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::pg::{encode, split_frame};

    fn decode(bytes: BytesMut) -> Result<FrontendMessage, WireError> {
        let mut bytes = bytes;
        let frame = split_frame(&mut bytes, 1 << 20)?.expect("one whole frame");
        assert!(bytes.is_empty(), "exactly one frame");
        FrontendMessage::decode(frame)
    }

    #[test]
    fn extended_protocol_round_trip() {
        let mut buf = BytesMut::new();
        encode::parse(&mut buf, b"s1", b"SELECT $1::int", &[23]);
        let FrontendMessage::Parse(parse) = decode(buf).expect("Parse") else {
            panic!("not Parse")
        };
        assert_eq!(
            (&parse.name[..], &parse.sql[..]),
            (&b"s1"[..], &b"SELECT $1::int"[..])
        );
        assert_eq!(&parse.parameter_types[..], &[0, 1, 0, 0, 0, 23]);
        let renamed = parse.renamed(b"wd_abc");
        let FrontendMessage::Parse(again) =
            decode(BytesMut::from(&renamed.raw()[..])).expect("renamed Parse")
        else {
            panic!("not Parse")
        };
        assert_eq!(&again.name[..], b"wd_abc");
        assert_eq!(again.sql, parse.sql);

        let mut buf = BytesMut::new();
        encode::bind(
            &mut buf,
            b"",
            b"s1",
            &[1],
            &[Some(&[0, 0, 0, 7]), None],
            &[1],
        );
        let FrontendMessage::Bind(bind) = decode(buf).expect("Bind") else {
            panic!("not Bind")
        };
        assert_eq!(&bind.statement[..], b"s1");
        let FrontendMessage::Bind(renamed) =
            decode(BytesMut::from(&bind.with_statement(b"other").raw()[..])).expect("Bind")
        else {
            panic!("not Bind")
        };
        assert_eq!(&renamed.statement[..], b"other");
        assert_eq!(renamed.arguments, bind.arguments);

        let mut buf = BytesMut::new();
        encode::describe(&mut buf, Target::Statement, b"s1");
        encode::execute(&mut buf, b"", 0);
        encode::close(&mut buf, Target::Portal, b"p");
        encode::sync(&mut buf);
        let mut messages = Vec::new();
        while let Some(frame) = split_frame(&mut buf, 1 << 20).expect("valid") {
            messages.push(FrontendMessage::decode(frame).expect("decodes"));
        }
        assert!(
            matches!(&messages[0], FrontendMessage::Describe(d) if d.target == Target::Statement && &d.name[..] == b"s1")
        );
        assert!(matches!(&messages[1], FrontendMessage::Execute(e) if e.max_rows == 0));
        assert!(matches!(&messages[2], FrontendMessage::Close(c) if c.target == Target::Portal));
        assert!(matches!(&messages[3], FrontendMessage::Sync(_)));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let cases: [&[u8]; 6] = [
            b"Q\x00\x00\x00\x05x",                                // no NUL
            b"Q\x00\x00\x00\x07x\x00y",                           // trailing bytes
            b"D\x00\x00\x00\x07X\x00\x00",                        // bad target
            b"S\x00\x00\x00\x05x",                                // Sync with a body
            b"B\x00\x00\x00\x0c\x00\x00\x00\x00\xff\xff\x00\x00", // negative format count
            b"?\x00\x00\x00\x04",                                 // unknown type
        ];
        for case in cases {
            assert!(decode(BytesMut::from(case)).is_err(), "{case:?} accepted");
        }
    }

    #[test]
    fn bind_value_lengths_are_checked() {
        let mut buf = BytesMut::new();
        encode::message(&mut buf, tag::BIND, |body| {
            body.put_slice(b"\0\0");
            body.put_i16(0);
            body.put_i16(1);
            body.put_i32(100);
            body.put_slice(b"short");
            body.put_i16(0);
        });
        assert!(decode(buf).is_err());
    }
}
