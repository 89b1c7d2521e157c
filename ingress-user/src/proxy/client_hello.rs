//! Pure: the SNI of a TLS ClientHello, from the bytes a client has sent so far
//! (RFC 8446 5.1 records, 4.1.2 ClientHello; RFC 6066 3 server_name). The ClientHello
//! may span several TLS records and any number of TCP segments: a post-quantum hybrid
//! key share (X25519MLKEM768) makes it about 1.8 KB. Nothing is decrypted or changed:
//! the caller forwards the very bytes it read.

/// The largest ClientHello read (all its records, headers included); a client that
/// sends more without completing one is refused.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// A TLS record's largest plaintext fragment (RFC 8446 5.1).
const MAX_RECORD: usize = 1 << 14;

/// What the bytes read so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// Not a whole ClientHello yet: read more.
    NeedMore,
    /// A whole ClientHello, with its server_name (lowercase), if it has one.
    Done { sni: Option<String> },
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    #[error("not TLS: the connection does not start with a TLS handshake record")]
    NotTls,
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    #[error("ClientHello larger than 16 KiB")]
    TooLarge,
}

/// Reads a ClientHello from `buf` (everything the client sent, from its first byte).
pub fn parse(buf: &[u8]) -> Result<Hello, HelloError> {
    // Early answers for what is plainly not TLS (an HTTP request, a port scan).
    match buf {
        [] => return Ok(Hello::NeedMore),
        [t, ..] if *t != 0x16 => return Err(HelloError::NotTls),
        [_, major, ..] if *major != 3 => return Err(HelloError::NotTls),
        [_, _, _, _, _, msg, ..] if *msg != 1 => {
            return Err(HelloError::Malformed("the first handshake message is not a ClientHello"));
        }
        _ => {}
    }
    // The handshake message, gathered from whole records.
    let mut message: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        if let Some(len) = handshake_length(&message) {
            if 4 + len > MAX_CLIENT_HELLO {
                return Err(HelloError::TooLarge);
            }
            if message.len() >= 4 + len {
                return client_hello(&message[4..4 + len]).map(|sni| Hello::Done { sni });
            }
        }
        let Some(header) = buf.get(pos..pos + 5) else { return need_more(buf) };
        if header[0] != 0x16 {
            return Err(HelloError::Malformed("a record of another type before the ClientHello ended"));
        }
        if header[1] != 3 {
            return Err(HelloError::Malformed("a record with a version other than 3.x"));
        }
        let len = u16::from_be_bytes([header[3], header[4]]) as usize;
        if len == 0 {
            return Err(HelloError::Malformed("an empty handshake record"));
        }
        if len > MAX_RECORD {
            return Err(HelloError::Malformed("a record longer than 2^14 bytes"));
        }
        let Some(fragment) = buf.get(pos + 5..pos + 5 + len) else { return need_more(buf) };
        message.extend_from_slice(fragment);
        pos += 5 + len;
    }
}

fn need_more(buf: &[u8]) -> Result<Hello, HelloError> {
    if buf.len() >= MAX_CLIENT_HELLO { Err(HelloError::TooLarge) } else { Ok(Hello::NeedMore) }
}

/// The declared length of the handshake message, once its 4-byte header is there.
fn handshake_length(message: &[u8]) -> Option<usize> {
    match message {
        [_, a, b, c, ..] => Some(u32::from_be_bytes([0, *a, *b, *c]) as usize),
        _ => None,
    }
}

/// A cursor over length-prefixed TLS fields; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HelloError> {
        if self.0.len() < n {
            return Err(HelloError::Malformed("a field runs past the end of the message"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, HelloError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, HelloError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Result<&'a [u8], HelloError> {
        let n = self.u8()? as usize;
        self.take(n)
    }
    fn vec16(&mut self) -> Result<&'a [u8], HelloError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The server_name of a ClientHello body (after the handshake header).
fn client_hello(body: &[u8]) -> Result<Option<String>, HelloError> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    if r.vec8()?.len() > 32 {
        return Err(HelloError::Malformed("a legacy_session_id longer than 32 bytes"));
    }
    let suites = r.vec16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed("no cipher suites, or an odd length"));
    }
    if r.vec8()?.is_empty() {
        return Err(HelloError::Malformed("no compression methods"));
    }
    if r.is_empty() {
        return Ok(None); // no extensions at all (TLS 1.2 clients may send none)
    }
    let mut exts = Reader(r.vec16()?);
    if !r.is_empty() {
        return Err(HelloError::Malformed("bytes after the extensions"));
    }
    let mut sni = None;
    let mut seen = false;
    while !exts.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != 0 {
            continue;
        }
        if std::mem::replace(&mut seen, true) {
            return Err(HelloError::Malformed("two server_name extensions"));
        }
        sni = server_name(data)?;
    }
    Ok(sni)
}

/// The host_name of a server_name extension's data (RFC 6066 3).
fn server_name(data: &[u8]) -> Result<Option<String>, HelloError> {
    let mut outer = Reader(data);
    let mut list = Reader(outer.vec16()?);
    if !outer.is_empty() || list.is_empty() {
        return Err(HelloError::Malformed("a server_name extension with a bad list length"));
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec16()?;
        if name_type != 0 || host.is_some() {
            continue; // other name types are unknown; one host_name counts
        }
        let ok = !name.is_empty()
            && name.len() <= 255
            && name.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_'));
        if !ok {
            return Err(HelloError::Malformed("a server_name that is not a DNS hostname"));
        }
        host = Some(String::from_utf8_lossy(name).to_ascii_lowercase());
    }
    Ok(host)
}

#[cfg(test)]
mod tests;
