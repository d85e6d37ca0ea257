//! The origin's reply, as this client must receive it: packets renumbered from the
//! client's sequence, EOF packets added or removed per the client's
//! CLIENT_DEPRECATE_EOF, OK packets without session-state details for a client that did
//! not ask for them, and statement ids in the client's numbering.

use bytes::BytesMut;

use super::errno::err_packet;
use crate::session::error::{ClientError, ErrorKind};

use crate::wire::mysql::reply::{EOF, EofPacket, OkPacket, PrepareOk};
use crate::wire::mysql::response::{Expect, Part, Response, Terminator};
use crate::wire::mysql::{Packet, WireError, caps, write_packet};

/// One reply on its way to the client.
pub struct Relay {
    response: Response,
    client_caps: u32,
    origin_caps: u32,
    /// The next sequence id towards the client.
    seq: u8,
    /// Column definitions still to come in the current result set or prepare.
    columns_left: u64,
    /// Parameter definitions still to come in a prepare.
    params_left: u64,
    /// The client's id for the statement a prepare creates.
    statement_id: u32,
    /// The status flags last seen.
    pub status: u16,
    /// The origin asked for a local file the client may not send: the origin gets an
    /// empty one, the client an error.
    refusing_infile: bool,
}

impl Relay {
    /// The reply to a command of the client sent with sequence id `client_seq`.
    pub fn new(
        expect: Expect,
        client_caps: u32,
        origin_caps: u32,
        client_seq: u8,
        status: u16,
    ) -> Relay {
        Relay {
            response: Response::new(expect, origin_caps),
            client_caps,
            origin_caps,
            seq: client_seq.wrapping_add(1),
            columns_left: 0,
            params_left: 0,
            statement_id: 0,
            status,
            refusing_infile: false,
        }
    }

    /// Whether the origin's request for a local file is refused for the client.
    pub fn refuses_infile(&self) -> bool {
        self.refusing_infile
    }

    /// Gives the statement a prepare creates the client's id `id`.
    pub fn set_statement_id(&mut self, id: u32) {
        self.statement_id = id;
    }

    /// Whether the last packet came.
    pub fn is_done(&self) -> bool {
        self.response.is_done()
    }

    /// Whether the origin waits for the client's file.
    pub fn awaits_infile(&self) -> bool {
        self.response.awaits_infile()
    }

    /// The next sequence id of the client's packets (its file, for LOAD DATA LOCAL).
    pub fn client_seq(&self) -> u8 {
        self.seq
    }

    /// The client sent one packet of its file.
    pub fn client_sent(&mut self) {
        self.seq = self.seq.wrapping_add(1);
    }

    fn client_deprecates_eof(&self) -> bool {
        self.client_caps & caps::DEPRECATE_EOF != 0
    }

    fn origin_deprecates_eof(&self) -> bool {
        self.origin_caps & caps::DEPRECATE_EOF != 0
    }

    fn write(&mut self, out: &mut BytesMut, payload: &[u8]) {
        self.seq = write_packet(out, self.seq, payload);
    }

    fn write_eof(&mut self, out: &mut BytesMut) {
        let eof = EofPacket {
            warnings: 0,
            status: self.status,
        };
        self.write(out, &eof.encode());
    }

    /// Writes the OK as the client negotiated it: as the origin sent it when the layouts
    /// agree.
    fn write_ok(&mut self, out: &mut BytesMut, ok: &OkPacket, raw: &[u8]) {
        let tracked = self.client_caps & caps::SESSION_TRACK != 0;
        if tracked || (ok.info.is_empty() && ok.session_state.is_none()) {
            self.write(out, raw);
        } else {
            self.write(out, &ok.encode(self.client_caps));
        }
    }

    /// Classifies one packet of the origin's reply and writes what the client gets for
    /// it; the caller reads OK packets' session state and the statuses from the part.
    pub fn relay(&mut self, packet: &Packet, out: &mut BytesMut) -> Result<Part, WireError> {
        let part = self.response.feed(packet)?;
        let raw = &packet.payload[..];
        if self.refusing_infile
            || matches!(part, Part::LocalInfile if self.client_caps & caps::LOCAL_FILES == 0)
        {
            self.refuse_infile(&part, out);
            return Ok(part);
        }
        match &part {
            Part::Ok(ok) => {
                self.status = ok.status;
                self.write_ok(out, ok, raw);
            }
            Part::ColumnCount(count) => {
                self.columns_left = *count;
                self.write(out, raw);
            }
            Part::Prepared(prepared) => {
                self.params_left = prepared.params.into();
                self.columns_left = prepared.columns.into();
                let ours = PrepareOk {
                    statement_id: self.statement_id,
                    ..*prepared
                };
                self.write(out, &ours.encode());
            }
            Part::Param => {
                self.write(out, raw);
                self.params_left = self.params_left.saturating_sub(1);
                if self.params_left == 0 && self.adds_eof() {
                    self.write_eof(out);
                }
            }
            Part::Column => {
                self.write(out, raw);
                self.columns_left = self.columns_left.saturating_sub(1);
                if self.columns_left == 0 && self.adds_eof() {
                    self.write_eof(out);
                }
            }
            Part::ColumnsEnd { status } => {
                self.status = *status;
                if !self.client_deprecates_eof() {
                    self.write(out, raw);
                }
            }
            Part::DefinitionsEnd => {
                if !self.client_deprecates_eof() {
                    self.write(out, raw);
                }
            }
            Part::End(terminator) => {
                self.status = terminator.status();
                self.write_terminator(out, terminator, raw);
            }
            Part::Err | Part::Row | Part::Text | Part::LocalInfile => self.write(out, raw),
        }
        Ok(part)
    }

    fn refuse_infile(&mut self, part: &Part, out: &mut BytesMut) {
        self.refusing_infile = true;
        match part {
            Part::Ok(ok) => self.status = ok.status,
            Part::LocalInfile => return,
            _ => {}
        }
        let error = ClientError::error(
            ErrorKind::NotSupported,
            "LOAD DATA LOCAL INFILE is refused: this client did not enable local files",
        )
        .hint("enable local_infile (allowLoadLocalInfile, local_infile=1) in the client");
        self.write(out, &err_packet(&error).encode());
    }

    fn adds_eof(&self) -> bool {
        self.origin_deprecates_eof() && !self.client_deprecates_eof()
    }

    fn write_terminator(&mut self, out: &mut BytesMut, terminator: &Terminator, raw: &[u8]) {
        match (terminator, self.client_deprecates_eof()) {
            (Terminator::Ok(ok), true) => self.write_ok(out, ok, raw),
            (Terminator::Eof(eof), true) => {
                let ok = OkPacket {
                    header: EOF,
                    status: eof.status,
                    warnings: eof.warnings,
                    ..OkPacket::default()
                };
                self.write(out, &ok.encode(self.client_caps));
            }
            (terminator, false) => {
                let eof = EofPacket {
                    warnings: terminator.warnings(),
                    status: terminator.status(),
                };
                self.write(out, &eof.encode());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(payload: &'static [u8]) -> Packet {
        Packet {
            seq: 9,
            parts: 1,
            payload: Bytes::from_static(payload),
        }
    }

    const MODERN: u32 = caps::PROTOCOL_41 | caps::DEPRECATE_EOF | caps::SESSION_TRACK;
    const OLD: u32 = caps::PROTOCOL_41;

    fn relayed(expect: Expect, client: u32, packets: &[&'static [u8]]) -> Vec<(u8, Vec<u8>)> {
        let mut relay = Relay::new(expect, client, MODERN, 0, 2);
        let mut out = BytesMut::new();
        for p in packets {
            relay.relay(&packet(p), &mut out).expect("valid");
        }
        assert!(relay.is_done());
        let mut split = Vec::new();
        while let Some(p) = crate::wire::mysql::split_packet(&mut out, 1 << 20).expect("valid") {
            split.push((p.seq, p.payload.to_vec()));
        }
        split
    }

    const RESULT: &[&[u8]] = &[b"\x01", b"col", b"\x01a", b"\xfe\x00\x00\x02\x00\x01\x00"];

    #[test]
    fn a_modern_client_gets_the_reply_as_sent_renumbered() {
        let out = relayed(Expect::Results, MODERN, RESULT);
        let seqs: Vec<u8> = out.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        assert_eq!(out[3].1, b"\xfe\x00\x00\x02\x00\x01\x00");
    }

    #[test]
    fn an_old_client_gets_eof_packets() {
        let out = relayed(Expect::Results, OLD, RESULT);
        let payloads: Vec<&[u8]> = out.iter().map(|(_, p)| &p[..]).collect();
        assert_eq!(
            payloads,
            vec![
                &b"\x01"[..],
                b"col",
                b"\xfe\x00\x00\x02\x00",
                b"\x01a",
                b"\xfe\x01\x00\x02\x00"
            ]
        );
        let seqs: Vec<u8> = out.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn prepares_get_the_clients_id_and_eofs() {
        let mut relay = Relay::new(Expect::Prepare, OLD, MODERN, 0, 2);
        relay.set_statement_id(7);
        let mut out = BytesMut::new();
        for p in [
            &b"\x00\x63\x00\x00\x00\x01\x00\x01\x00\x00\x00\x00"[..],
            b"param",
            b"column",
        ] {
            let packet = Packet {
                seq: 1,
                parts: 1,
                payload: Bytes::copy_from_slice(p),
            };
            relay.relay(&packet, &mut out).expect("valid");
        }
        assert!(relay.is_done());
        let mut payloads = Vec::new();
        while let Some(p) = crate::wire::mysql::split_packet(&mut out, 1 << 20).expect("valid") {
            payloads.push(p.payload.to_vec());
        }
        assert_eq!(payloads.len(), 5);
        assert_eq!(&payloads[0][1..5], &7u32.to_le_bytes());
        assert_eq!(payloads[2], b"\xfe\x00\x00\x02\x00");
        assert_eq!(payloads[4], b"\xfe\x00\x00\x02\x00");
    }

    #[test]
    fn an_untracked_client_gets_oks_without_session_state() {
        let ok = OkPacket {
            header: 0,
            status: 2 | crate::wire::mysql::status::SESSION_STATE_CHANGED,
            session_state: Some(Bytes::from_static(b"\x01\x05\x04shop")),
            ..OkPacket::default()
        };
        let encoded = ok.encode(MODERN).freeze();
        let mut relay = Relay::new(Expect::Ok, OLD, MODERN, 0, 2);
        let mut out = BytesMut::new();
        let packet = Packet {
            seq: 1,
            parts: 1,
            payload: encoded,
        };
        assert!(matches!(relay.relay(&packet, &mut out), Ok(Part::Ok(_))));
        let sent = crate::wire::mysql::split_packet(&mut out, 1 << 20)
            .expect("valid")
            .expect("one");
        assert_eq!(&sent.payload[..], b"\x00\x00\x00\x02\x00\x00\x00");
    }
}
