//! Where a server's reply to a command ends: a sans-I/O reader that classifies each
//! packet of the reply (OK, ERR, a result set's parts, a prepared statement's
//! definitions) and says when the last one came. Result sets continue while their
//! terminator says more results exist.

use super::reply::{self, ERR, EofPacket, LOCAL_INFILE, OK, OkPacket, PrepareOk, ends_rows};
use super::{Packet, WireError, caps, status};
use bytes::Bytes;

/// What kind of reply a command gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY and COM_STMT_EXECUTE: OK, ERR, a LOCAL INFILE request, or result sets.
    Results,
    /// COM_STMT_PREPARE: its OK and the definitions of parameters and columns.
    Prepare,
    /// COM_STMT_FETCH and COM_FIELD_LIST: rows (or column definitions) up to a
    /// terminator.
    Rows,
    /// COM_STATISTICS: one string.
    Text,
    /// OK or ERR alone (COM_PING, COM_INIT_DB, COM_STMT_RESET, …).
    Ok,
}

/// One packet of a reply, classified.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    /// An OK packet (the end of a statement without rows).
    Ok(OkPacket),
    /// An ERR packet (the end of the reply).
    Err,
    /// The server asks for a local file's contents.
    LocalInfile,
    /// The column count of a result set.
    ColumnCount(u64),
    /// A column definition.
    Column,
    /// The EOF after the column definitions (without CLIENT_DEPRECATE_EOF).
    ColumnsEnd {
        /// Its status flags.
        status: u16,
    },
    /// A row.
    Row,
    /// The end of a result set, EOF or OK.
    End(Terminator),
    /// The OK of a prepare.
    Prepared(PrepareOk),
    /// A parameter definition of a prepare.
    Param,
    /// The EOF after a prepare's parameter or column definitions (without
    /// CLIENT_DEPRECATE_EOF).
    DefinitionsEnd,
    /// A string (COM_STATISTICS).
    Text,
}

/// What ends a result set: an EOF, or an OK under CLIENT_DEPRECATE_EOF.
#[derive(Clone, Debug, PartialEq)]
pub enum Terminator {
    /// An EOF packet.
    Eof(EofPacket),
    /// An OK packet (header 0xFE).
    Ok(OkPacket),
}

impl Terminator {
    fn decode(payload: Bytes, capabilities: u32) -> Result<Terminator, WireError> {
        if capabilities & caps::DEPRECATE_EOF == 0 {
            EofPacket::decode(payload).map(Terminator::Eof)
        } else {
            OkPacket::decode(payload, capabilities).map(Terminator::Ok)
        }
    }

    /// Its status flags.
    pub fn status(&self) -> u16 {
        match self {
            Terminator::Eof(eof) => eof.status,
            Terminator::Ok(ok) => ok.status,
        }
    }

    /// Its warnings.
    pub fn warnings(&self) -> u16 {
        match self {
            Terminator::Eof(eof) => eof.warnings,
            Terminator::Ok(ok) => ok.warnings,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    First,
    Columns(u64),
    ColumnsEof,
    Rows,
    Params {
        params: u16,
        columns: u16,
    },
    ParamsEof {
        columns: u16,
    },
    PrepareColumns(u16),
    PrepareColumnsEof,
    /// Waiting for the client's file, then the server's OK or ERR.
    Infile,
    Done,
}

/// Follows one reply.
#[derive(Clone, Debug)]
pub struct Response {
    expect: Expect,
    capabilities: u32,
    state: State,
}

impl Response {
    /// The reply to a command of kind `expect`, on a connection that negotiated
    /// `capabilities`.
    pub fn new(expect: Expect, capabilities: u32) -> Response {
        let state = match expect {
            Expect::Rows => State::Rows,
            _ => State::First,
        };
        Response {
            expect,
            capabilities,
            state,
        }
    }

    /// Whether the last packet of the reply came.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the server waits for the client's file (LOAD DATA LOCAL).
    pub fn awaits_infile(&self) -> bool {
        self.state == State::Infile
    }

    fn deprecate_eof(&self) -> bool {
        self.capabilities & caps::DEPRECATE_EOF != 0
    }

    /// Classifies the next packet of the reply.
    pub fn feed(&mut self, packet: &Packet) -> Result<Part, WireError> {
        let payload = &packet.payload;
        if payload.first() == Some(&ERR) && self.state != State::Done {
            self.state = State::Done;
            return Ok(Part::Err);
        }
        let part = match self.state {
            State::First => self.first(payload.clone())?,
            State::Columns(left) => {
                self.state = match (left, self.deprecate_eof()) {
                    (1, true) => State::Rows,
                    (1, false) => State::ColumnsEof,
                    _ => State::Columns(left - 1),
                };
                Part::Column
            }
            State::ColumnsEof => {
                let status = EofPacket::decode(payload.clone())?.status;
                // A cursor was opened: its rows come with COM_STMT_FETCH.
                self.state = match status & status::CURSOR_EXISTS {
                    0 => State::Rows,
                    _ => State::Done,
                };
                Part::ColumnsEnd { status }
            }
            State::Rows if ends_rows(payload) => {
                let terminator = Terminator::decode(payload.clone(), self.capabilities)?;
                self.end_of_result(terminator.status());
                Part::End(terminator)
            }
            State::Rows => Part::Row,
            State::Params { params, columns } => {
                self.state = match (params, self.deprecate_eof()) {
                    (1, true) => self.prepare_columns(columns),
                    (1, false) => State::ParamsEof { columns },
                    _ => State::Params {
                        params: params - 1,
                        columns,
                    },
                };
                Part::Param
            }
            State::ParamsEof { columns } => {
                self.state = self.prepare_columns(columns);
                Part::DefinitionsEnd
            }
            State::PrepareColumns(left) => {
                self.state = match (left, self.deprecate_eof()) {
                    (1, true) => State::Done,
                    (1, false) => State::PrepareColumnsEof,
                    _ => State::PrepareColumns(left - 1),
                };
                Part::Column
            }
            State::PrepareColumnsEof => {
                self.state = State::Done;
                Part::DefinitionsEnd
            }
            State::Infile => {
                let ok = OkPacket::decode(payload.clone(), self.capabilities)?;
                self.end_of_result(ok.status);
                Part::Ok(ok)
            }
            State::Done => {
                return Err(WireError::Malformed {
                    packet: "reply",
                    problem: "a packet after the end of the reply",
                });
            }
        };
        Ok(part)
    }

    fn first(&mut self, payload: Bytes) -> Result<Part, WireError> {
        match (self.expect, payload.first().copied()) {
            (Expect::Text, _) => {
                self.state = State::Done;
                Ok(Part::Text)
            }
            (Expect::Prepare, Some(OK)) => {
                let prepared = PrepareOk::decode(payload)?;
                self.state = match prepared.params {
                    0 => self.prepare_columns(prepared.columns),
                    params => State::Params {
                        params,
                        columns: prepared.columns,
                    },
                };
                Ok(Part::Prepared(prepared))
            }
            (Expect::Ok, Some(reply::EOF)) if payload.len() == 5 => {
                let eof = EofPacket::decode(payload)?;
                self.end_of_result(eof.status);
                Ok(Part::End(Terminator::Eof(eof)))
            }
            (Expect::Results | Expect::Ok, Some(OK)) | (Expect::Ok, Some(reply::EOF)) => {
                let ok = OkPacket::decode(payload, self.capabilities)?;
                self.end_of_result(ok.status);
                Ok(Part::Ok(ok))
            }
            (Expect::Results, Some(LOCAL_INFILE)) => {
                self.state = State::Infile;
                Ok(Part::LocalInfile)
            }
            (Expect::Results, Some(_)) => {
                let mut r = super::codec::Reader::new("column count", payload);
                let count = r.lenenc()?;
                if count == 0 || !r.is_empty() {
                    return Err(r.malformed("not a column count"));
                }
                self.state = State::Columns(count);
                Ok(Part::ColumnCount(count))
            }
            _ => Err(WireError::Malformed {
                packet: "reply",
                problem: "not a reply this command can get",
            }),
        }
    }

    fn prepare_columns(&self, columns: u16) -> State {
        match columns {
            0 => State::Done,
            columns => State::PrepareColumns(columns),
        }
    }

    fn end_of_result(&mut self, status: u16) {
        self.state = match status & status::MORE_RESULTS_EXISTS {
            0 => State::Done,
            _ => State::First,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(payload: &'static [u8]) -> Packet {
        Packet {
            seq: 1,
            parts: 1,
            payload: Bytes::from_static(payload),
        }
    }

    fn parts(expect: Expect, capabilities: u32, packets: &[&'static [u8]]) -> Vec<Part> {
        let mut response = Response::new(expect, capabilities);
        let parts = packets
            .iter()
            .map(|p| response.feed(&packet(p)).expect("valid"))
            .collect();
        assert!(response.is_done());
        parts
    }

    const MODERN: u32 = caps::PROTOCOL_41 | caps::DEPRECATE_EOF;
    const OLD: u32 = caps::PROTOCOL_41;

    #[test]
    fn result_sets_end_at_their_terminator_in_both_styles() {
        let modern = parts(
            Expect::Results,
            MODERN,
            &[b"\x01", b"col", b"\x01a", b"\xfe\x00\x00\x02\x00\x00\x00"],
        );
        assert!(matches!(&modern[3], Part::End(t) if t.status() == 2 && t.warnings() == 0));
        let old = parts(
            Expect::Results,
            OLD,
            &[
                b"\x01",
                b"col",
                b"\xfe\x00\x00\x02\x00",
                b"\x01a",
                b"\xfe\x01\x00\x02\x00",
            ],
        );
        assert_eq!(old[2], Part::ColumnsEnd { status: 2 });
        assert!(matches!(
            &old[4],
            Part::End(Terminator::Eof(EofPacket {
                status: 2,
                warnings: 1
            }))
        ));
    }

    #[test]
    fn more_results_continue_the_reply() {
        let both = parts(
            Expect::Results,
            MODERN,
            &[
                b"\x00\x01\x00\x0a\x00\x00\x00",
                b"\x01",
                b"col",
                b"\xfe\x00\x00\x02\x00\x00\x00",
            ],
        );
        assert!(matches!(
            both[0],
            Part::Ok(OkPacket {
                affected_rows: 1,
                ..
            })
        ));
        let mut response = Response::new(Expect::Results, MODERN);
        response
            .feed(&packet(b"\x00\x00\x00\x0a\x00\x00\x00"))
            .expect("valid");
        assert!(!response.is_done());
        assert_eq!(
            response.feed(&packet(b"\xff\x10\x04#HY000x")),
            Ok(Part::Err)
        );
        assert!(response.is_done());
        assert!(response.feed(&packet(b"\x00")).is_err());
    }

    #[test]
    fn prepare_replies_count_their_definitions() {
        let reply = parts(
            Expect::Prepare,
            OLD,
            &[
                b"\x00\x01\x00\x00\x00\x01\x00\x02\x00\x00\x00\x00",
                b"p1",
                b"p2",
                b"\xfe\x00\x00\x02\x00",
                b"c1",
                b"\xfe\x00\x00\x02\x00",
            ],
        );
        assert_eq!(reply[3], Part::DefinitionsEnd);
        let modern = parts(
            Expect::Prepare,
            MODERN,
            &[b"\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"],
        );
        assert!(matches!(
            modern[0],
            Part::Prepared(PrepareOk {
                params: 0,
                columns: 0,
                ..
            })
        ));
    }

    #[test]
    fn a_cursor_ends_the_execute_reply_after_the_columns() {
        let reply = parts(
            Expect::Results,
            OLD,
            &[b"\x01", b"col", b"\xfe\x00\x00\x42\x00"],
        );
        assert_eq!(reply[2], Part::ColumnsEnd { status: 0x42 });
        let fetched = parts(Expect::Rows, OLD, &[b"\x00\x00a", b"\xfe\x00\x00\x82\x00"]);
        assert_eq!(fetched[0], Part::Row);
    }
}
