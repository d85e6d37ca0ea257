//! Length-encoded integers and strings, fixed little-endian integers, and a reader over a
//! payload that refuses to read past its end.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::WireError;

/// A cursor over one packet's payload.
pub struct Reader {
    packet: &'static str,
    rest: Bytes,
}

impl Reader {
    /// Reads `payload`, a `packet` (named in errors).
    pub fn new(packet: &'static str, payload: Bytes) -> Reader {
        Reader {
            packet,
            rest: payload,
        }
    }

    /// An error about this packet.
    pub fn malformed(&self, problem: &'static str) -> WireError {
        WireError::Malformed {
            packet: self.packet,
            problem,
        }
    }

    fn need(&self, n: usize) -> Result<(), WireError> {
        if self.rest.len() < n {
            Err(self.malformed("payload ends early"))
        } else {
            Ok(())
        }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8, WireError> {
        self.need(1)?;
        Ok(self.rest.get_u8())
    }

    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> Result<u16, WireError> {
        self.need(2)?;
        Ok(self.rest.get_u16_le())
    }

    /// Three bytes, little-endian.
    pub fn u24(&mut self) -> Result<u32, WireError> {
        self.need(3)?;
        let bytes = self.rest.split_to(3);
        Ok(u32::from(bytes[0]) | u32::from(bytes[1]) << 8 | u32::from(bytes[2]) << 16)
    }

    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> Result<u32, WireError> {
        self.need(4)?;
        Ok(self.rest.get_u32_le())
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> Result<u64, WireError> {
        self.need(8)?;
        Ok(self.rest.get_u64_le())
    }

    /// A length-encoded integer; `None` for the NULL marker (0xFB).
    pub fn lenenc_or_null(&mut self) -> Result<Option<u64>, WireError> {
        match self.u8()? {
            0xFB => Ok(None),
            0xFC => self.u16().map(|n| Some(n.into())),
            0xFD => self.u24().map(|n| Some(n.into())),
            0xFE => self.u64().map(Some),
            0xFF => Err(self.malformed("0xFF is not a length-encoded integer")),
            small => Ok(Some(small.into())),
        }
    }

    /// A length-encoded integer.
    pub fn lenenc(&mut self) -> Result<u64, WireError> {
        self.lenenc_or_null()?
            .ok_or_else(|| self.malformed("NULL where a length was due"))
    }

    /// A length-encoded string.
    pub fn lenenc_bytes(&mut self) -> Result<Bytes, WireError> {
        let len = self.lenenc()?;
        let len = usize::try_from(len).map_err(|_| self.malformed("string length overflows"))?;
        self.bytes(len)
    }

    /// `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, WireError> {
        self.need(n)?;
        Ok(self.rest.split_to(n))
    }

    /// A NUL-terminated string, without its terminator.
    pub fn cstr(&mut self) -> Result<Bytes, WireError> {
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.malformed("string is not NUL-terminated"))?;
        let text = self.rest.split_to(end);
        self.rest.advance(1);
        Ok(text)
    }

    /// A NUL-terminated string, or the rest when the terminator is missing (some peers
    /// leave the last one out).
    pub fn cstr_or_rest(&mut self) -> Bytes {
        match self.rest.iter().position(|&b| b == 0) {
            Some(end) => {
                let text = self.rest.split_to(end);
                self.rest.advance(1);
                text
            }
            None => self.rest(),
        }
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.need(n)?;
        self.rest.advance(n);
        Ok(())
    }

    /// Everything left.
    pub fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.rest)
    }
}

/// Appends a length-encoded integer.
pub fn put_lenenc(out: &mut BytesMut, n: u64) {
    match n {
        0..=250 => out.put_u8(n as u8),
        251..=0xFFFF => {
            out.put_u8(0xFC);
            out.put_u16_le(n as u16);
        }
        0x1_0000..=0xFF_FFFF => {
            out.put_u8(0xFD);
            out.put_slice(&(n as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.put_u8(0xFE);
            out.put_u64_le(n);
        }
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_bytes(out: &mut BytesMut, bytes: &[u8]) {
    put_lenenc(out, bytes.len() as u64);
    out.put_slice(bytes);
}

/// Appends a NUL-terminated string.
pub fn put_cstr(out: &mut BytesMut, bytes: &[u8]) {
    out.put_slice(bytes);
    out.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_encoded_integers_round_trip_at_every_width() {
        for n in [
            0,
            250,
            251,
            0xFFFF,
            0x1_0000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = BytesMut::new();
            put_lenenc(&mut out, n);
            let mut reader = Reader::new("test", out.freeze());
            assert_eq!(reader.lenenc().expect("valid"), n);
            assert!(reader.is_empty());
        }
        let mut null = Reader::new("test", Bytes::from_static(b"\xfb"));
        assert_eq!(null.lenenc_or_null().expect("valid"), None);
        assert!(
            Reader::new("test", Bytes::from_static(b"\xff"))
                .lenenc()
                .is_err()
        );
    }

    #[test]
    fn strings_refuse_to_overrun() {
        let mut out = BytesMut::new();
        put_lenenc_bytes(&mut out, b"abc");
        put_cstr(&mut out, b"de");
        let mut reader = Reader::new("test", out.freeze());
        assert_eq!(&reader.lenenc_bytes().expect("valid")[..], b"abc");
        assert_eq!(&reader.cstr().expect("valid")[..], b"de");
        let mut short = Reader::new("test", Bytes::from_static(b"\x05ab"));
        assert_eq!(
            short.lenenc_bytes(),
            Err(WireError::Malformed {
                packet: "test",
                problem: "payload ends early"
            })
        );
        assert!(
            Reader::new("test", Bytes::from_static(b"ab"))
                .cstr()
                .is_err()
        );
    }
}
