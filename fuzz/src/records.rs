//! A fuzz input as a sequence of operations: `op`, a little-endian `u16`
//! length, then that many bytes (fewer if the input ends first). The seed
//! generator writes the same framing, so the mutator starts from real
//! datagrams in the right slots.

/// Splits `data` into `(op, bytes)` records. Never panics.
pub fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&op, rest) = data.split_first()?;
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
            _ => (0, &[][..]),
        };
        let (body, rest) = rest.split_at(len.min(rest.len()));
        data = rest;
        Some((op, body))
    })
}

/// Appends one record in the framing [`records`] reads.
pub fn push_record(out: &mut Vec<u8>, op: u8, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("record of at most 64 KiB");
    out.push(op);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut v = Vec::new();
        push_record(&mut v, 1, b"abc");
        push_record(&mut v, 2, b"");
        push_record(&mut v, 3, b"xyz");
        let got: Vec<_> = records(&v).collect();
        assert_eq!(got, vec![(1, &b"abc"[..]), (2, &b""[..]), (3, &b"xyz"[..])]);
        let cut: Vec<_> = records(&v[..v.len() - 1]).collect();
        assert_eq!(cut.last(), Some(&(3, &b"xy"[..])));
        assert_eq!(records(&[7]).collect::<Vec<_>>(), vec![(7, &b""[..])]);
    }
}
