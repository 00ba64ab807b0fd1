//! A small, strict binary codec for sotto's own wire formats (join
//! requests, sealed deliveries, rosters, invitations, rotation notices).
//! Every read is bounds-checked; nothing here can panic on peer input.

use crate::error::WireError;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn magic(&mut self, magic: &[u8; 4]) -> Result<(), WireError> {
        if self.take(4)? == magic {
            Ok(())
        } else {
            Err(WireError::BadMagic)
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A byte string with a u16 length prefix, at most `max` bytes.
    pub(crate) fn bytes16(&mut self, max: usize) -> Result<&'a [u8], WireError> {
        let len = usize::from(u16::from_be_bytes(self.array()?));
        if len > max {
            return Err(WireError::TooLong);
        }
        self.take(len)
    }

    pub(crate) fn finish(self) -> Result<(), WireError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(WireError::TrailingBytes)
        }
    }
}

#[derive(Default)]
pub(crate) struct Writer {
    pub(crate) buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    pub(crate) fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }
    /// Length-prefixed (u16); callers bound the length beforehand.
    pub(crate) fn bytes16(&mut self, b: &[u8]) -> &mut Self {
        let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
        self.raw(&len.to_be_bytes()).raw(&b[..usize::from(len)])
    }
}
