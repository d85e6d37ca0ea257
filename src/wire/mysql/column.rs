//! Column definitions (ColumnDefinition41) and the column types they name.

use bytes::{BufMut, Bytes, BytesMut};

use super::WireError;
use super::codec::{Reader, put_lenenc, put_lenenc_bytes};

/// Column types (`MYSQL_TYPE_*`).
pub mod types {
    /// DECIMAL (old).
    pub const DECIMAL: u8 = 0x00;
    /// TINYINT.
    pub const TINY: u8 = 0x01;
    /// SMALLINT.
    pub const SHORT: u8 = 0x02;
    /// INT.
    pub const LONG: u8 = 0x03;
    /// FLOAT.
    pub const FLOAT: u8 = 0x04;
    /// DOUBLE.
    pub const DOUBLE: u8 = 0x05;
    /// NULL.
    pub const NULL: u8 = 0x06;
    /// TIMESTAMP.
    pub const TIMESTAMP: u8 = 0x07;
    /// BIGINT.
    pub const LONGLONG: u8 = 0x08;
    /// MEDIUMINT.
    pub const INT24: u8 = 0x09;
    /// DATE.
    pub const DATE: u8 = 0x0a;
    /// TIME.
    pub const TIME: u8 = 0x0b;
    /// DATETIME.
    pub const DATETIME: u8 = 0x0c;
    /// YEAR.
    pub const YEAR: u8 = 0x0d;
    /// JSON (MySQL).
    pub const JSON: u8 = 0xf5;
    /// DECIMAL.
    pub const NEWDECIMAL: u8 = 0xf6;
    /// BLOB and TEXT.
    pub const BLOB: u8 = 0xfc;
    /// VARCHAR.
    pub const VAR_STRING: u8 = 0xfd;
    /// CHAR.
    pub const STRING: u8 = 0xfe;
}

/// The column flag that marks an unsigned integer.
pub const UNSIGNED_FLAG: u16 = 0x20;

/// One column definition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnDefinition {
    /// The schema (database).
    pub schema: Bytes,
    /// The table, as the query named it.
    pub table: Bytes,
    /// The table.
    pub org_table: Bytes,
    /// The column, as the query named it.
    pub name: Bytes,
    /// The column.
    pub org_name: Bytes,
    /// Its collation id.
    pub collation: u16,
    /// Its display length.
    pub length: u32,
    /// Its type (`types`).
    pub column_type: u8,
    /// Its flags.
    pub flags: u16,
    /// Its decimals.
    pub decimals: u8,
}

impl ColumnDefinition {
    /// Decodes one.
    pub fn decode(payload: Bytes) -> Result<ColumnDefinition, WireError> {
        let mut r = Reader::new("column definition", payload);
        if &r.lenenc_bytes()?[..] != b"def" {
            return Err(r.malformed("the catalog is not \"def\""));
        }
        let schema = r.lenenc_bytes()?;
        let table = r.lenenc_bytes()?;
        let org_table = r.lenenc_bytes()?;
        let name = r.lenenc_bytes()?;
        let org_name = r.lenenc_bytes()?;
        if r.lenenc()? < 12 {
            return Err(r.malformed("the fixed fields are shorter than 12 bytes"));
        }
        let column = ColumnDefinition {
            schema,
            table,
            org_table,
            name,
            org_name,
            collation: r.u16()?,
            length: r.u32()?,
            column_type: r.u8()?,
            flags: r.u16()?,
            decimals: r.u8()?,
        };
        Ok(column)
    }

    /// Encodes it.
    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(64);
        put_lenenc_bytes(&mut out, b"def");
        for part in [
            &self.schema,
            &self.table,
            &self.org_table,
            &self.name,
            &self.org_name,
        ] {
            put_lenenc_bytes(&mut out, part);
        }
        put_lenenc(&mut out, 12);
        out.put_u16_le(self.collation);
        out.put_u32_le(self.length);
        out.put_u8(self.column_type);
        out.put_u16_le(self.flags);
        out.put_u8(self.decimals);
        out.put_u16_le(0);
        out
    }

    /// Whether it holds unsigned integers.
    pub fn is_unsigned(&self) -> bool {
        self.flags & UNSIGNED_FLAG != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_definitions_round_trip_and_refuse_garbage() {
        let column = ColumnDefinition {
            schema: Bytes::from_static(b"shop"),
            table: Bytes::from_static(b"o"),
            org_table: Bytes::from_static(b"orders"),
            name: Bytes::from_static(b"n"),
            org_name: Bytes::from_static(b"id"),
            collation: 63,
            length: 20,
            column_type: types::LONGLONG,
            flags: UNSIGNED_FLAG | 1,
            decimals: 0,
        };
        let decoded = ColumnDefinition::decode(column.encode().freeze()).expect("valid");
        assert_eq!(decoded, column);
        assert!(decoded.is_unsigned());
        assert!(ColumnDefinition::decode(Bytes::from_static(b"\x03abc")).is_err());
        assert!(ColumnDefinition::decode(Bytes::from_static(b"\x03def\x00")).is_err());
    }
}
