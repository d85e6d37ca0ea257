//! Values of the binary protocol: the rows of COM_STMT_EXECUTE's result sets (a NULL
//! bitmap, then each value in its column type's layout) and the parameters a
//! COM_STMT_EXECUTE carries (the same layouts, with their own NULL bitmap).

use bytes::{BufMut, Bytes, BytesMut};

use super::WireError;
use super::codec::{Reader, put_lenenc_bytes};
use super::column::{UNSIGNED_FLAG, types};

/// One binary value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// NULL.
    Null,
    /// A signed integer (TINY, SHORT, LONG, INT24, LONGLONG, YEAR).
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// FLOAT.
    Float(f32),
    /// DOUBLE.
    Double(f64),
    /// DATE, DATETIME, TIMESTAMP and TIME, as sent: their length-prefixed layout.
    Temporal(Bytes),
    /// Every length-encoded type: strings, DECIMAL, BLOB, JSON, …
    Bytes(Bytes),
}

/// The width of an integer type, if it is one.
fn integer_width(column_type: u8) -> Option<usize> {
    match column_type {
        types::TINY => Some(1),
        types::SHORT | types::YEAR => Some(2),
        types::LONG | types::INT24 => Some(4),
        types::LONGLONG => Some(8),
        _ => None,
    }
}

fn read_value(r: &mut Reader, column_type: u8, unsigned: bool) -> Result<Value, WireError> {
    if let Some(width) = integer_width(column_type) {
        let raw = r.bytes(width)?;
        let mut bytes = [0u8; 8];
        bytes[..width].copy_from_slice(&raw);
        let unsigned_value = u64::from_le_bytes(bytes);
        if unsigned {
            return Ok(Value::UInt(unsigned_value));
        }
        let shift = 64 - 8 * width as u32;
        return Ok(Value::Int(((unsigned_value << shift) as i64) >> shift));
    }
    Ok(match column_type {
        types::FLOAT => Value::Float(f32::from_bits(r.u32()?)),
        types::DOUBLE => Value::Double(f64::from_bits(r.u64()?)),
        types::DATE | types::DATETIME | types::TIMESTAMP | types::TIME => {
            let len = usize::from(r.u8()?);
            let mut layout = BytesMut::with_capacity(1 + len);
            layout.put_u8(len as u8);
            layout.put_slice(&r.bytes(len)?);
            Value::Temporal(layout.freeze())
        }
        types::NULL => Value::Null,
        _ => Value::Bytes(r.lenenc_bytes()?),
    })
}

fn null_bitmap_len(columns: usize, offset: usize) -> usize {
    (columns + offset).div_ceil(8)
}

fn is_null(bitmap: &[u8], index: usize, offset: usize) -> bool {
    let bit = index + offset;
    bitmap[bit / 8] & (1 << (bit % 8)) != 0
}

/// Decodes a binary result row of columns with these (type, flags).
pub fn decode_row(payload: Bytes, columns: &[(u8, u16)]) -> Result<Vec<Value>, WireError> {
    let mut r = Reader::new("binary row", payload);
    if r.u8()? != 0x00 {
        return Err(r.malformed("a binary row starts with 0x00"));
    }
    // Result rows offset the bitmap by two bits.
    let bitmap = r.bytes(null_bitmap_len(columns.len(), 2))?;
    let mut row = Vec::with_capacity(columns.len());
    for (index, &(column_type, flags)) in columns.iter().enumerate() {
        row.push(match is_null(&bitmap, index, 2) {
            true => Value::Null,
            false => read_value(&mut r, column_type, flags & UNSIGNED_FLAG != 0)?,
        });
    }
    if !r.is_empty() {
        return Err(r.malformed("bytes after the last column"));
    }
    Ok(row)
}

fn write_value(out: &mut BytesMut, value: &Value) {
    match value {
        Value::Null => {}
        Value::Int(v) => out.put_i64_le(*v),
        Value::UInt(v) => out.put_u64_le(*v),
        Value::Float(v) => out.put_f32_le(*v),
        Value::Double(v) => out.put_f64_le(*v),
        Value::Temporal(layout) => out.put_slice(layout),
        Value::Bytes(bytes) => put_lenenc_bytes(out, bytes),
    }
}

/// The type (and unsigned flag) a parameter is sent as.
fn parameter_type(value: &Value) -> (u8, u8) {
    match value {
        Value::Null => (types::NULL, 0),
        Value::Int(_) => (types::LONGLONG, 0),
        Value::UInt(_) => (types::LONGLONG, 0x80),
        Value::Float(_) => (types::FLOAT, 0),
        Value::Double(_) => (types::DOUBLE, 0),
        Value::Temporal(layout) if layout.len() <= 5 => (types::DATE, 0),
        Value::Temporal(_) => (types::DATETIME, 0),
        Value::Bytes(_) => (types::VAR_STRING, 0),
    }
}

/// A COM_STMT_EXECUTE of statement `id` with `params`, binding their types, no cursor.
pub fn encode_execute(id: u32, params: &[Value]) -> BytesMut {
    let mut out = BytesMut::with_capacity(16 + params.len() * 9);
    out.put_u8(super::command::code::STMT_EXECUTE);
    out.put_u32_le(id);
    out.put_u8(0);
    out.put_u32_le(1);
    if params.is_empty() {
        return out;
    }
    let mut bitmap = vec![0u8; null_bitmap_len(params.len(), 0)];
    for (index, value) in params.iter().enumerate() {
        if *value == Value::Null {
            bitmap[index / 8] |= 1 << (index % 8);
        }
    }
    out.put_slice(&bitmap);
    out.put_u8(1);
    for value in params {
        let (column_type, unsigned) = parameter_type(value);
        out.put_u8(column_type);
        out.put_u8(unsigned);
    }
    for value in params {
        write_value(&mut out, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::mysql::command::Execute;

    #[test]
    fn binary_rows_decode_each_layout_and_nulls() {
        // 0x00, bitmap (4 columns + 2 bits: one byte; column 2 is NULL: bit 4),
        // TINY -1, LONGLONG unsigned max, (NULL), DATE 2026-12-03, VAR_STRING "hé".
        let mut row = BytesMut::from(&[0x00u8, 0b0001_0000][..]);
        row.put_u8(0xff);
        row.put_u64_le(u64::MAX);
        row.put_slice(&[4, 0xea, 0x07, 12, 3]);
        put_lenenc_bytes(&mut row, "hé".as_bytes());
        let columns = [
            (types::TINY, 0),
            (types::LONGLONG, UNSIGNED_FLAG),
            (types::LONG, 0),
            (types::DATE, 0),
            (types::VAR_STRING, 0),
        ];
        let decoded = decode_row(row.freeze(), &columns).expect("valid");
        assert_eq!(
            decoded,
            vec![
                Value::Int(-1),
                Value::UInt(u64::MAX),
                Value::Null,
                Value::Temporal(Bytes::from_static(&[4, 0xea, 0x07, 12, 3])),
                Value::Bytes(Bytes::from("hé")),
            ]
        );
        assert!(decode_row(Bytes::from_static(&[0x00, 0x00, 0x01]), &columns).is_err());
        assert!(decode_row(Bytes::from_static(&[0x01]), &columns).is_err());
    }

    #[test]
    fn executes_bind_types_and_mark_nulls() {
        let params = [
            Value::Int(-7),
            Value::Null,
            Value::Bytes(Bytes::from("x")),
            Value::UInt(3),
        ];
        let payload = encode_execute(9, &params).freeze();
        let execute = Execute::decode(&payload, params.len() as u16).expect("valid");
        let types = execute.param_types.expect("bound");
        assert_eq!(
            &types[..],
            &[
                types::LONGLONG,
                0,
                types::NULL,
                0,
                types::VAR_STRING,
                0,
                types::LONGLONG,
                0x80
            ]
        );
        assert_eq!(payload[10], 0b0000_0010, "the second parameter is NULL");
        assert_eq!(&payload[payload.len() - 10..payload.len() - 8], b"\x01x");
        assert_eq!(encode_execute(1, &[]).len(), 10);
    }
}
