//! The connection phase: the server's greeting (Handshake v10), the client's
//! HandshakeResponse41 (and the SSL request that may precede it), and the auth switch.

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{Reader, put_cstr, put_lenenc_bytes};
use super::{WireError, caps};

/// The server's first packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// The server's version string.
    pub server_version: Bytes,
    /// The connection (thread) id.
    pub connection_id: u32,
    /// The scramble (20 bytes with the usual plugins).
    pub scramble: Bytes,
    /// The server's capabilities.
    pub capabilities: u32,
    /// The default collation id.
    pub collation: u8,
    /// Status flags.
    pub status: u16,
    /// The default authentication plugin.
    pub auth_plugin: Bytes,
}

impl Greeting {
    /// Decodes a greeting; an ERR packet instead (too many connections, host blocked)
    /// is for the caller to recognise first.
    pub fn decode(payload: Bytes) -> Result<Greeting, WireError> {
        let mut r = Reader::new("handshake", payload);
        if r.u8()? != 10 {
            return Err(r.malformed("protocol version is not 10"));
        }
        let server_version = r.cstr()?;
        let connection_id = r.u32()?;
        let mut scramble = BytesMut::from(&r.bytes(8)?[..]);
        r.skip(1)?;
        let low = u32::from(r.u16()?);
        let collation = r.u8()?;
        let status = r.u16()?;
        let capabilities = low | u32::from(r.u16()?) << 16;
        let data_len = usize::from(r.u8()?);
        r.skip(10)?;
        if capabilities & caps::SECURE_CONNECTION != 0 {
            let len = data_len.saturating_sub(8).max(13);
            let part = r.bytes(len)?;
            // The second part is NUL-terminated within its declared length.
            let end = part.iter().position(|&b| b == 0).unwrap_or(part.len());
            scramble.extend_from_slice(&part[..end]);
        }
        let auth_plugin = if capabilities & caps::PLUGIN_AUTH != 0 {
            r.cstr_or_rest()
        } else {
            Bytes::from_static(b"mysql_native_password")
        };
        Ok(Greeting {
            server_version,
            connection_id,
            scramble: scramble.freeze(),
            capabilities,
            collation,
            status,
            auth_plugin,
        })
    }

    /// Encodes it (warpdrive as the server); the scramble must be 20 bytes.
    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(128);
        out.put_u8(10);
        put_cstr(&mut out, &self.server_version);
        out.put_u32_le(self.connection_id);
        out.put_slice(&self.scramble[..8]);
        out.put_u8(0);
        out.put_u16_le(self.capabilities as u16);
        out.put_u8(self.collation);
        out.put_u16_le(self.status);
        out.put_u16_le((self.capabilities >> 16) as u16);
        out.put_u8(self.scramble.len() as u8 + 1);
        out.put_bytes(0, 10);
        put_cstr(&mut out, &self.scramble[8..]);
        put_cstr(&mut out, &self.auth_plugin);
        out
    }
}

/// The client's answer to the greeting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The capabilities the client asks for.
    pub capabilities: u32,
    /// The largest packet it accepts.
    pub max_packet: u32,
    /// Its collation id (the connection's character set).
    pub collation: u8,
    /// The user.
    pub user: Bytes,
    /// The authentication response.
    pub auth_response: Bytes,
    /// The database it asks for.
    pub database: Option<Bytes>,
    /// The plugin the auth response is for.
    pub auth_plugin: Option<Bytes>,
    /// Connection attributes, as sent.
    pub attributes: Option<Bytes>,
}

/// The length of an SSL request: the response's fixed part alone.
pub const SSL_REQUEST_LEN: usize = 32;

impl HandshakeResponse {
    /// Decodes a response; an SSL request (32 bytes, SSL capability) has no user.
    pub fn decode(payload: Bytes) -> Result<HandshakeResponse, WireError> {
        let mut r = Reader::new("handshake response", payload);
        let capabilities = r.u32()?;
        if capabilities & caps::PROTOCOL_41 == 0 {
            return Err(r.malformed("the client does not speak protocol 4.1"));
        }
        let max_packet = r.u32()?;
        let collation = r.u8()?;
        r.skip(23)?;
        let mut response = HandshakeResponse {
            capabilities,
            max_packet,
            collation,
            ..HandshakeResponse::default()
        };
        if r.is_empty() {
            return Ok(response);
        }
        response.user = r.cstr()?;
        response.auth_response = if capabilities & caps::PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
            r.lenenc_bytes()?
        } else if capabilities & caps::SECURE_CONNECTION != 0 {
            let len = usize::from(r.u8()?);
            r.bytes(len)?
        } else {
            r.cstr()?
        };
        if capabilities & caps::CONNECT_WITH_DB != 0 && !r.is_empty() {
            response.database = Some(r.cstr_or_rest()).filter(|db| !db.is_empty());
        }
        if capabilities & caps::PLUGIN_AUTH != 0 && !r.is_empty() {
            response.auth_plugin = Some(r.cstr_or_rest());
        }
        if capabilities & caps::CONNECT_ATTRS != 0 && !r.is_empty() {
            response.attributes = Some(r.lenenc_bytes()?);
        }
        Ok(response)
    }

    /// Whether this is an SSL request: the client waits for TLS before the rest.
    pub fn is_ssl_request(&self) -> bool {
        self.capabilities & caps::SSL != 0 && self.user.is_empty() && self.auth_plugin.is_none()
    }

    /// The fixed part: capabilities, max packet, collation, filler; an SSL request alone.
    pub fn encode_fixed(&self, out: &mut BytesMut) {
        out.put_u32_le(self.capabilities);
        out.put_u32_le(self.max_packet);
        out.put_u8(self.collation);
        out.put_bytes(0, 23);
    }

    /// Encodes the whole response (warpdrive as the client).
    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(128);
        self.encode_fixed(&mut out);
        put_cstr(&mut out, &self.user);
        put_lenenc_bytes(&mut out, &self.auth_response);
        if let Some(database) = &self.database {
            put_cstr(&mut out, database);
        }
        if let Some(plugin) = &self.auth_plugin {
            put_cstr(&mut out, plugin);
        }
        if let Some(attributes) = &self.attributes {
            put_lenenc_bytes(&mut out, attributes);
        }
        out
    }
}

/// The auth switch request (0xFE): the server wants another plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSwitch {
    /// The plugin.
    pub plugin: Bytes,
    /// Its data (the scramble, without a trailing NUL).
    pub data: Bytes,
}

impl AuthSwitch {
    /// Decodes one, the 0xFE header included.
    pub fn decode(payload: Bytes) -> Result<AuthSwitch, WireError> {
        let mut r = Reader::new("auth switch request", payload);
        if r.u8()? != 0xFE {
            return Err(r.malformed("not an auth switch request"));
        }
        let plugin = r.cstr_or_rest();
        let mut data = r.rest();
        if data.last() == Some(&0) {
            data.truncate(data.len() - 1);
        }
        Ok(AuthSwitch { plugin, data })
    }

    /// Encodes it (warpdrive as the server).
    pub fn encode(&self) -> BytesMut {
        let mut out = BytesMut::with_capacity(64);
        out.put_u8(0xFE);
        put_cstr(&mut out, &self.plugin);
        put_cstr(&mut out, &self.data);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn greeting() -> Greeting {
        Greeting {
            server_version: Bytes::from_static(b"10.11.19-MariaDB"),
            connection_id: 42,
            scramble: Bytes::from_static(b"abcdefghijklmnopqrst"),
            capabilities: caps::PROTOCOL_41
                | caps::SECURE_CONNECTION
                | caps::PLUGIN_AUTH
                | caps::DEPRECATE_EOF,
            collation: 45,
            status: 2,
            auth_plugin: Bytes::from_static(b"caching_sha2_password"),
        }
    }

    #[test]
    fn greeting_round_trips() {
        let encoded = greeting().encode().freeze();
        assert_eq!(Greeting::decode(encoded).expect("valid"), greeting());
        assert!(Greeting::decode(Bytes::from_static(b"\x09x\0")).is_err());
        assert!(Greeting::decode(Bytes::from_static(b"\x0a5.7\0\x01")).is_err());
    }

    #[test]
    fn response_round_trips_and_ssl_requests_are_recognised() {
        let response = HandshakeResponse {
            capabilities: caps::PROTOCOL_41
                | caps::SECURE_CONNECTION
                | caps::PLUGIN_AUTH
                | caps::PLUGIN_AUTH_LENENC_CLIENT_DATA
                | caps::CONNECT_WITH_DB
                | caps::CONNECT_ATTRS,
            max_packet: 1 << 24,
            collation: 8,
            user: Bytes::from_static(b"app"),
            auth_response: Bytes::from_static(&[7; 20]),
            database: Some(Bytes::from_static(b"shop")),
            auth_plugin: Some(Bytes::from_static(b"mysql_native_password")),
            attributes: Some(Bytes::from_static(b"\x04_pid\x0212")),
        };
        let decoded = HandshakeResponse::decode(response.encode().freeze()).expect("valid");
        assert_eq!(decoded, response);
        assert!(!decoded.is_ssl_request());
        let mut ssl = BytesMut::new();
        HandshakeResponse {
            capabilities: caps::PROTOCOL_41 | caps::SSL,
            ..HandshakeResponse::default()
        }
        .encode_fixed(&mut ssl);
        assert_eq!(ssl.len(), SSL_REQUEST_LEN);
        assert!(
            HandshakeResponse::decode(ssl.freeze())
                .expect("valid")
                .is_ssl_request()
        );
        assert!(HandshakeResponse::decode(Bytes::from_static(&[0; 8])).is_err());
    }

    #[test]
    fn auth_switch_round_trips() {
        let switch = AuthSwitch {
            plugin: Bytes::from_static(b"mysql_native_password"),
            data: Bytes::from_static(b"01234567890123456789"),
        };
        assert_eq!(
            AuthSwitch::decode(switch.encode().freeze()).expect("valid"),
            switch
        );
    }
}
