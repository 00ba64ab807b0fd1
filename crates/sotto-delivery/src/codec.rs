//! A small, strict binary codec for sotto's own wire formats (join
//! requests, sealed deliveries, rosters, invitations, rotation notices).
//! Every read is bounds-checked; nothing here can panic on peer input.

/// A sotto wire structure could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The input ended early.
    #[error("truncated")]
    Truncated,
    /// The input has bytes after the structure.
    #[error("trailing bytes")]
    TrailingBytes,
    /// The input does not start with the expected magic/version.
    #[error("bad magic or version")]
    BadMagic,
    /// A length field is over its limit.
    #[error("field too long")]
    TooLong,
    /// A list that must be in strictly increasing order is not.
    #[error("entries out of order")]
    Unordered,
}

/// Reads a wire structure; every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub fn magic(&mut self, magic: &[u8; 4]) -> Result<(), WireError> {
        if self.take(4)? == magic {
            Ok(())
        } else {
            Err(WireError::BadMagic)
        }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A byte string with a u16 length prefix, at most `max` bytes.
    pub fn bytes16(&mut self, max: usize) -> Result<&'a [u8], WireError> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        if len > max {
            return Err(WireError::TooLong);
        }
        self.take(len)
    }

    pub fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

/// Writes a wire structure.
#[derive(Default)]
pub struct Writer {
    /// What was written.
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    /// Length-prefixed (u16); callers bound the length beforehand.
    pub fn bytes16(&mut self, b: &[u8]) -> &mut Self {
        let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.raw(&len.to_be_bytes()).raw(&b[..usize::from(len)])
    }
}
