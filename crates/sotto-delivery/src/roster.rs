//! Rosters that scale (P5 at 10,000 listeners).
//!
//! The distributor does not sign the list of admitted listeners: it signs a
//! **commitment** to it — the count and the root of a Merkle tree over the
//! listeners' fingerprints, sorted — once per change batch
//! (sotto-e2ee's `Distributor::roster_upload`). The signed header is a
//! few hundred bytes whatever the size of the room, and it is all every
//! participant receives.
//!
//! The fingerprints themselves go to the server once (then as changes),
//! in chunks ([`RosterLeaves`]); the server rebuilds the tree
//! ([`RosterStore`]) and answers a participant's question "is this key on
//! the signed roster?" with a proof ([`RosterProof`]) that the participant
//! checks against the signed root (sotto-e2ee's `VerifiedRoster::check_proofs`).
//! A server that lies cannot make a proof verify: a listener it hides from
//! the room's member list is still counted in the signed count, and one it
//! shows but the distributor did not admit has no inclusion proof. Because
//! the leaves are sorted, *absence* is provable too: the two neighbours
//! around where the key would be, at adjacent positions.
//!
//! The tree is the one of RFC 9162 §2.1 (leaf `H(0x00 ‖ fp)`, node
//! `H(0x01 ‖ left ‖ right)`, split at the largest power of two), built
//! bottom-up: a level's last node without a sibling moves up unchanged,
//! which gives the same tree. Nothing here panics on peer input.
//!
//! It lives here, with the server's other public state, so that the server
//! links none of sotto-e2ee: it parses a signed roster but never verifies
//! or makes one.

use sha2::{Digest, Sha256};

use crate::codec::{Reader, WireError, Writer};

/// Most listeners a roster may list.
pub const MAX_ROSTER_LEN: usize = 100_000;
/// Most stage members a roster's stage map may list.
pub const MAX_STAGE_MAP_LEN: usize = 1_000;
/// Longest room id in a signed structure.
const MAX_ROOM_ID_LEN: usize = 256;

/// SHA-256 fingerprint of an identity key: what rosters list.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The order of rosters, the same for every distributor of a room: the key
/// generation (stage epoch, then rotation counter — which all stage members
/// agree on) and a sequence number within that generation. A successor
/// distributor therefore continues where its predecessor stopped as soon as
/// it rotates (and a change of distributor by host succession is a stage
/// epoch change, which rotates), or after `Distributor::resume_after`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RosterVersion {
    /// Stage epoch of the generation the roster describes.
    pub epoch: u64,
    /// Rotation counter of that generation.
    pub rotation: u32,
    /// Roster number within the generation (from 1).
    pub seq: u64,
}

/// A signed roster's fields, parsed but **not verified** (sotto-e2ee's
/// `VerifiedRoster::verify` checks the signature; the server never needs
/// to).
#[derive(Debug, Clone)]
pub struct SignedRoster<'a> {
    /// The room it is for.
    pub room: &'a [u8],
    /// The signer's identity key.
    pub signer: [u8; 32],
    /// Version, count, root.
    pub header: RosterHeader,
    /// How many accounts the listed keys belong to, as the distributor
    /// verified them (an account listening from two devices is one): what
    /// listeners compare with the audience count the room shows them.
    pub accounts: u32,
    /// The stage epoch of the stage map.
    pub stage_epoch: u64,
    /// The stage map: each member's leaf and device key, by leaf.
    pub stage_members: Vec<(u32, [u8; 32])>,
    /// The epoch's room code digest.
    pub code_digest: [u8; 32],
    /// The bytes the signature covers.
    pub signed: &'a [u8],
    /// The signature.
    pub sig: [u8; 64],
}

/// Parses a signed roster ("SRS5"). Facing the network; fuzzed.
pub fn parse_signed_roster(bytes: &[u8]) -> Result<SignedRoster<'_>, WireError> {
    let mut r = Reader::new(bytes);
    r.magic(b"SRS5")?;
    let room = r.bytes16(MAX_ROOM_ID_LEN)?;
    let signer = r.array::<32>()?;
    let version = read_version(&mut r)?;
    let count = r.u32()?;
    if count as usize > MAX_ROSTER_LEN {
        return Err(WireError::TooLong);
    }
    let accounts = r.u32()?;
    if accounts > count {
        return Err(WireError::TooLong);
    }
    let root = r.array::<32>()?;
    let stage_epoch = r.u64()?;
    let stage_len = usize::from(r.u16()?);
    if stage_len > MAX_STAGE_MAP_LEN {
        return Err(WireError::TooLong);
    }
    let mut stage_members = Vec::with_capacity(stage_len);
    for _ in 0..stage_len {
        stage_members.push((r.u32()?, r.array::<32>()?));
    }
    if !stage_members.is_sorted_by(|a, b| a.0 < b.0) {
        return Err(WireError::Unordered);
    }
    let code_digest = r.array::<32>()?;
    let signed_len = bytes.len().saturating_sub(64);
    let sig = r.array::<64>()?;
    r.finish()?;
    Ok(SignedRoster {
        room,
        signer,
        header: RosterHeader {
            version,
            count,
            root,
        },
        accounts,
        stage_epoch,
        stage_members,
        code_digest,
        signed: &bytes[..signed_len],
        sig,
    })
}

/// A roster's version, count and root, read **without** checking its
/// signature: for the server, which keeps its proofs in step with what the
/// distributor signed.
pub fn roster_header(bytes: &[u8]) -> Result<RosterHeader, WireError> {
    parse_signed_roster(bytes).map(|p| p.header)
}

/// Fingerprints per [`RosterLeaves`] chunk: one chunk stays well inside a
/// channel message (64 KiB, base64 in JSON) — 1,400 × 32 B = 44.8 KB.
pub const ROSTER_LEAVES_CHUNK: usize = 1_400;
/// Fingerprints per proof request. A proof of absence at 100,000 listeners
/// is two paths of 17 hashes (~1.2 KB), so 32 answers stay inside one
/// channel message.
pub const ROSTER_PROOF_BATCH: usize = 32;
/// Longest authentication path: a tree of up to 2³² leaves.
const MAX_PATH: usize = 32;

/// A 32-byte tree hash.
pub type Hash = [u8; 32];

fn leaf_hash(fp: &Fingerprint) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(fp.0);
    h.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty roster (`SHA-256("")`, as RFC 9162).
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A Merkle tree over a sorted set of listener fingerprints.
#[derive(Clone, Default)]
pub struct RosterTree {
    leaves: Vec<Fingerprint>,
    /// `levels[0]` are the leaf hashes; the last level is the root alone.
    levels: Vec<Vec<Hash>>,
}

impl std::fmt::Debug for RosterTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RosterTree")
            .field("leaves", &self.leaves.len())
            .finish_non_exhaustive()
    }
}

impl RosterTree {
    /// The tree of `leaves` (sorted and deduplicated here).
    pub fn new(mut leaves: Vec<Fingerprint>) -> Self {
        leaves.sort_unstable();
        leaves.dedup();
        let mut levels = Vec::new();
        if !leaves.is_empty() {
            let mut level: Vec<Hash> = leaves.iter().map(leaf_hash).collect();
            while level.len() > 1 {
                let next = level
                    .chunks(2)
                    .map(|pair| match pair {
                        [l, r] => node_hash(l, r),
                        [lone] => *lone,
                        _ => unreachable!("chunks(2) yields one or two"),
                    })
                    .collect();
                levels.push(std::mem::replace(&mut level, next));
            }
            levels.push(level);
        }
        Self { leaves, levels }
    }

    /// The root the distributor signs.
    pub fn root(&self) -> Hash {
        self.levels
            .last()
            .and_then(|l| l.first())
            .copied()
            .unwrap_or_else(empty_root)
    }

    /// Number of listeners.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Whether it lists nobody.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The listed fingerprints, sorted.
    pub fn leaves(&self) -> &[Fingerprint] {
        &self.leaves
    }

    fn path(&self, mut index: usize) -> Vec<Hash> {
        let mut path = Vec::new();
        for level in &self.levels[..self.levels.len().saturating_sub(1)] {
            if let Some(sibling) = level.get(index ^ 1) {
                path.push(*sibling);
            }
            index /= 2;
        }
        path
    }

    fn neighbour(&self, index: usize) -> Neighbour {
        Neighbour {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            fp: self.leaves[index],
            path: self.path(index),
        }
    }

    /// Proof that `fp` is on the roster, or that it is not.
    pub fn prove(&self, fp: &Fingerprint) -> RosterProof {
        match self.leaves.binary_search(fp) {
            Ok(i) => RosterProof::Included {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                path: self.path(i),
            },
            Err(i) => RosterProof::Excluded {
                left: i.checked_sub(1).map(|l| self.neighbour(l)),
                right: (i < self.leaves.len()).then(|| self.neighbour(i)),
            },
        }
    }
}

/// A leaf next to where an absent fingerprint would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    /// Its position among the sorted leaves.
    pub index: u32,
    /// Its fingerprint.
    pub fp: Fingerprint,
    /// Its authentication path, leaf level first.
    pub path: Vec<Hash>,
}

/// Whether one fingerprint is on a signed roster, with the hashes that
/// show it against the roster's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterProof {
    /// At `index`, with its authentication path.
    Included {
        /// Its position among the sorted leaves.
        index: u32,
        /// Its authentication path, leaf level first.
        path: Vec<Hash>,
    },
    /// Not listed: the leaves just below and just above it, at adjacent
    /// positions (one is absent at either end of the tree; both when the
    /// roster is empty).
    Excluded {
        /// The greatest listed fingerprint below it.
        left: Option<Neighbour>,
        /// The least listed fingerprint above it.
        right: Option<Neighbour>,
    },
}

/// The root a leaf at `index` of a tree of `size` leaves hashes up to
/// through `path` (RFC 9162 §2.1.3.2), or None if the path cannot belong
/// to such a tree.
fn root_from_path(index: u64, size: u64, leaf: &Fingerprint, path: &[Hash]) -> Option<Hash> {
    if index >= size {
        return None;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash(leaf);
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(r)
}

/// Checks `proof` for `fp` against a roster of `count` listeners with
/// `root`: `Some(true)` listed, `Some(false)` proven absent, None if the
/// proof is not one of this roster.
pub fn check_proof(root: &Hash, count: u32, fp: &Fingerprint, proof: &RosterProof) -> Option<bool> {
    let size = u64::from(count);
    let at =
        |n: &Neighbour| root_from_path(u64::from(n.index), size, &n.fp, &n.path) == Some(*root);
    match proof {
        RosterProof::Included { index, path } => {
            (root_from_path(u64::from(*index), size, fp, path) == Some(*root)).then_some(true)
        }
        RosterProof::Excluded { left, right } => {
            let ok = match (left, right) {
                (None, None) => count == 0 && *root == empty_root(),
                (Some(l), None) => l.fp < *fp && u64::from(l.index) + 1 == size && at(l),
                (None, Some(r)) => *fp < r.fp && r.index == 0 && at(r),
                (Some(l), Some(r)) => {
                    l.fp < *fp
                        && *fp < r.fp
                        && u64::from(l.index) + 1 == u64::from(r.index)
                        && at(l)
                        && at(r)
                }
            };
            ok.then_some(false)
        }
    }
}

fn write_path(w: &mut Writer, path: &[Hash]) {
    w.raw(&[u8::try_from(path.len()).unwrap_or(u8::MAX)]);
    for h in path.iter().take(usize::from(u8::MAX)) {
        w.raw(h);
    }
}

fn read_path(r: &mut Reader<'_>) -> Result<Vec<Hash>, WireError> {
    let len = usize::from(r.array::<1>()?[0]);
    if len > MAX_PATH {
        return Err(WireError::TooLong);
    }
    (0..len).map(|_| r.array::<32>()).collect()
}

fn write_version(w: &mut Writer, v: RosterVersion) {
    w.u64(v.epoch).u32(v.rotation).u64(v.seq);
}

fn read_version(r: &mut Reader<'_>) -> Result<RosterVersion, WireError> {
    Ok(RosterVersion {
        epoch: r.u64()?,
        rotation: r.u32()?,
        seq: r.u64()?,
    })
}

fn write_fps(w: &mut Writer, fps: &[Fingerprint]) {
    w.u32(u32::try_from(fps.len()).unwrap_or(u32::MAX));
    for fp in fps {
        w.raw(&fp.0);
    }
}

fn read_fps(r: &mut Reader<'_>, max: usize) -> Result<Vec<Fingerprint>, WireError> {
    let n = r.u32()? as usize;
    if n > max {
        return Err(WireError::TooLong);
    }
    (0..n).map(|_| r.array::<32>().map(Fingerprint)).collect()
}

/// Answers to one proof request, against the roster of `version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterProofs {
    /// The roster the proofs are against.
    pub version: RosterVersion,
    /// Each fingerprint asked about, with its proof.
    pub proofs: Vec<(Fingerprint, RosterProof)>,
}

impl RosterProofs {
    /// Wire form (`E2eeDown::RosterProofs`).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(b"SRP1");
        write_version(&mut w, self.version);
        w.u16(u16::try_from(self.proofs.len()).unwrap_or(u16::MAX));
        for (fp, proof) in self.proofs.iter().take(usize::from(u16::MAX)) {
            w.raw(&fp.0);
            match proof {
                RosterProof::Included { index, path } => {
                    w.raw(&[0]).u32(*index);
                    write_path(&mut w, path);
                }
                RosterProof::Excluded { left, right } => {
                    let flags = u8::from(left.is_some()) | (u8::from(right.is_some()) << 1);
                    w.raw(&[1, flags]);
                    for n in [left, right].into_iter().flatten() {
                        w.u32(n.index).raw(&n.fp.0);
                        write_path(&mut w, &n.path);
                    }
                }
            }
        }
        w.buf
    }

    /// Parses a server's answer. Facing the network; fuzzed.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        r.magic(b"SRP1")?;
        let version = read_version(&mut r)?;
        let n = usize::from(r.u16()?);
        if n > ROSTER_PROOF_BATCH {
            return Err(WireError::TooLong);
        }
        let mut proofs = Vec::with_capacity(n);
        for _ in 0..n {
            let fp = Fingerprint(r.array()?);
            let proof = match r.array::<1>()?[0] {
                0 => RosterProof::Included {
                    index: r.u32()?,
                    path: read_path(&mut r)?,
                },
                1 => {
                    let flags = r.array::<1>()?[0];
                    if flags > 3 {
                        return Err(WireError::BadMagic);
                    }
                    let mut side = |present: bool| -> Result<Option<Neighbour>, WireError> {
                        if !present {
                            return Ok(None);
                        }
                        Ok(Some(Neighbour {
                            index: r.u32()?,
                            fp: Fingerprint(r.array()?),
                            path: read_path(&mut r)?,
                        }))
                    };
                    let left = side(flags & 1 == 1)?;
                    let right = side(flags & 2 == 2)?;
                    RosterProof::Excluded { left, right }
                }
                _ => return Err(WireError::BadMagic),
            };
            proofs.push((fp, proof));
        }
        r.finish()?;
        Ok(Self { version, proofs })
    }
}

/// Encodes a proof request (`E2eeUp::RosterProof`): up to
/// [`ROSTER_PROOF_BATCH`] fingerprints.
pub fn encode_proof_request(fps: &[Fingerprint]) -> Vec<u8> {
    let mut w = Writer::default();
    w.raw(b"SRQ1");
    write_fps(&mut w, &fps[..fps.len().min(ROSTER_PROOF_BATCH)]);
    w.buf
}

/// Parses a proof request. Facing the network; fuzzed.
pub fn parse_proof_request(bytes: &[u8]) -> Result<Vec<Fingerprint>, WireError> {
    let mut r = Reader::new(bytes);
    r.magic(b"SRQ1")?;
    let fps = read_fps(&mut r, ROSTER_PROOF_BATCH)?;
    r.finish()?;
    Ok(fps)
}

/// One chunk of the listener fingerprints behind a signed roster, sent by
/// the distributor to the server before the roster itself: the changes
/// since the roster of version `base`, or (`base` None) the start of the
/// whole list. Public data: the server already knows who listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterLeaves {
    /// The roster the changes apply to (None: to the empty roster).
    pub base: Option<RosterVersion>,
    /// Listeners admitted since.
    pub added: Vec<Fingerprint>,
    /// Listeners gone since.
    pub removed: Vec<Fingerprint>,
}

impl RosterLeaves {
    /// Wire form (`E2eeUp::RosterLeaves`).
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.raw(b"SRL1");
        match self.base {
            Some(v) => {
                w.raw(&[1]);
                write_version(&mut w, v);
            }
            None => {
                w.raw(&[0]);
            }
        }
        write_fps(&mut w, &self.added);
        write_fps(&mut w, &self.removed);
        w.buf
    }

    /// Parses a chunk. Facing the network; fuzzed.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        r.magic(b"SRL1")?;
        let base = match r.array::<1>()?[0] {
            0 => None,
            1 => Some(read_version(&mut r)?),
            _ => return Err(WireError::BadMagic),
        };
        let added = read_fps(&mut r, ROSTER_LEAVES_CHUNK)?;
        let removed = read_fps(&mut r, ROSTER_LEAVES_CHUNK)?;
        r.finish()?;
        Ok(Self {
            base,
            added,
            removed,
        })
    }

    /// The chunks that take a roster from `from` (the listeners at
    /// version `base`; None: nothing uploaded) to `to`.
    pub fn chunks(
        base: Option<(RosterVersion, &std::collections::BTreeSet<Fingerprint>)>,
        to: &std::collections::BTreeSet<Fingerprint>,
    ) -> Vec<Vec<u8>> {
        let (base, added, removed): (_, Vec<_>, Vec<_>) = match base {
            Some((v, from)) => (
                Some(v),
                to.difference(from).copied().collect(),
                from.difference(to).copied().collect(),
            ),
            None => (None, to.iter().copied().collect(), Vec::new()),
        };
        let n = added
            .len()
            .max(removed.len())
            .div_ceil(ROSTER_LEAVES_CHUNK)
            .max(1);
        (0..n)
            .map(|i| {
                let part = |v: &[Fingerprint]| {
                    v.iter()
                        .skip(i * ROSTER_LEAVES_CHUNK)
                        .take(ROSTER_LEAVES_CHUNK)
                        .copied()
                        .collect()
                };
                RosterLeaves {
                    base,
                    added: part(&added),
                    removed: part(&removed),
                }
                .encode()
            })
            .collect()
    }
}

/// The fields of a signed roster the server needs, read without checking
/// the signature (the server trusts no one's signature on behalf of
/// clients; it only keeps its tree in step with what was signed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RosterHeader {
    /// The roster's version.
    pub version: RosterVersion,
    /// How many listeners it lists.
    pub count: u32,
    /// The root of the tree over their fingerprints.
    pub root: Hash,
}

/// Why the server's roster store did not take a signed roster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterStoreError {
    /// The bytes are not a roster or a chunk.
    #[error("malformed roster: {0}")]
    Malformed(#[from] WireError),
    /// The store does not hold what the changes apply to, or they do not
    /// add up to the signed root: the distributor must send the whole list.
    #[error("roster changes do not apply; send the whole list")]
    Resync,
}

/// What the server keeps of a room's roster: the latest signed roster,
/// the tree behind it, and the chunks a distributor sent for the next one.
/// Sans-IO; the relay (and the tests' relay) drive it.
#[derive(Debug, Default)]
pub struct RosterStore {
    current: Option<(RosterHeader, RosterTree)>,
    /// Chunks received for the next roster.
    staged: Option<Staged>,
}

/// The chunks one sender sent for its next roster, on one base.
#[derive(Debug)]
struct Staged {
    sender: Vec<u8>,
    changes: RosterLeaves,
}

impl RosterStore {
    /// Takes a chunk from `sender` (any stable id of its connection).
    /// A chunk on another base, or from another sender, starts over.
    pub fn stage(&mut self, sender: &[u8], chunk: &[u8]) -> Result<(), RosterStoreError> {
        let c = RosterLeaves::parse(chunk)?;
        match &mut self.staged {
            Some(st) if st.sender == sender && st.changes.base == c.base => {
                let ch = &mut st.changes;
                if ch.added.len() + c.added.len() > MAX_ROSTER_LEN
                    || ch.removed.len() + c.removed.len() > MAX_ROSTER_LEN
                {
                    self.staged = None;
                    return Err(WireError::TooLong.into());
                }
                ch.added.extend(c.added);
                ch.removed.extend(c.removed);
            }
            _ => {
                self.staged = Some(Staged {
                    sender: sender.to_vec(),
                    changes: c,
                })
            }
        }
        Ok(())
    }

    /// Applies the chunks `sender` staged to the roster they are based on
    /// and keeps the result if it adds up to the signed `roster`'s count
    /// and root. [`RosterStoreError::Resync`]: tell the sender to send the
    /// whole list.
    pub fn commit(
        &mut self,
        sender: &[u8],
        roster: &[u8],
    ) -> Result<RosterHeader, RosterStoreError> {
        let header = roster_header(roster)?;
        // No check that it is newer: a host that starts a new group starts
        // its versions over, and rollbacks are for clients to refuse.
        let staged = self.staged.take();
        let Some(RosterLeaves {
            base,
            added,
            removed,
        }) = staged.filter(|s| s.sender == sender).map(|s| s.changes)
        else {
            return Err(RosterStoreError::Resync);
        };
        let mut set: std::collections::BTreeSet<Fingerprint> = match (base, &self.current) {
            (None, _) => Default::default(),
            (Some(v), Some((h, tree))) if h.version == v => tree.leaves().iter().copied().collect(),
            _ => return Err(RosterStoreError::Resync),
        };
        for fp in &removed {
            set.remove(fp);
        }
        set.extend(added);
        if set.len() != header.count as usize {
            return Err(RosterStoreError::Resync);
        }
        let tree = RosterTree::new(set.into_iter().collect());
        if tree.root() != header.root {
            return Err(RosterStoreError::Resync);
        }
        self.current = Some((header, tree));
        Ok(header)
    }

    /// Answers a proof request against the roster held (None: none held).
    pub fn prove(&self, request: &[u8]) -> Result<Option<Vec<u8>>, RosterStoreError> {
        let fps = parse_proof_request(request)?;
        Ok(self.current.as_ref().map(|(h, tree)| {
            RosterProofs {
                version: h.version,
                proofs: fps.iter().map(|fp| (*fp, tree.prove(fp))).collect(),
            }
            .encode()
        }))
    }

    /// The roster held: its header and listeners.
    pub fn current(&self) -> Option<(&RosterHeader, &[Fingerprint])> {
        self.current.as_ref().map(|(h, t)| (h, t.leaves()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(i: u32) -> Fingerprint {
        Fingerprint(Sha256::digest(i.to_be_bytes()).into())
    }

    /// RFC 9162's recursive definition, to check the bottom-up build.
    fn mth(leaves: &[Fingerprint]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaf_hash(&leaves[0]),
            n => {
                let k = n.next_power_of_two() / 2;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn bottom_up_tree_is_rfc_9162s_and_every_proof_checks() {
        for n in [0usize, 1, 2, 3, 5, 8, 13, 64, 100] {
            let tree = RosterTree::new((0..n as u32).map(fp).collect());
            assert_eq!(tree.root(), mth(tree.leaves()), "n = {n}");
            let count = n as u32;
            for i in 0..n as u32 + 5 {
                let f = fp(i);
                let p = tree.prove(&f);
                assert_eq!(
                    check_proof(&tree.root(), count, &f, &p),
                    Some(i < n as u32),
                    "n = {n}, i = {i}"
                );
                // The same proof against another root fails. (Against
                // another count it may verify — a path binds the root, and
                // the count is signed beside it, not derived from it.)
                if n > 1 {
                    assert_eq!(check_proof(&empty_root(), count, &f, &p), None);
                }
            }
        }
    }

    #[test]
    fn absence_needs_adjacent_neighbours() {
        let tree = RosterTree::new((0..10).map(fp).collect());
        let root = tree.root();
        let leaves = tree.leaves();
        let absent = fp(99);
        let RosterProof::Excluded { left, right } = tree.prove(&absent) else {
            panic!("fp(99) is not listed");
        };
        // Neighbours two apart (hiding the leaf between) do not pass.
        if let (Some(l), Some(r)) = (&left, &right) {
            if l.index > 0 {
                let wider = RosterProof::Excluded {
                    left: Some(tree.neighbour(l.index as usize - 1)),
                    right: right.clone(),
                };
                assert_eq!(check_proof(&root, 10, &absent, &wider), None);
            }
            assert_eq!(r.index, l.index + 1);
        }
        // A listed key cannot be shown absent with its own neighbours.
        let listed = leaves[4];
        let fake = RosterProof::Excluded {
            left: Some(tree.neighbour(3)),
            right: Some(tree.neighbour(5)),
        };
        assert_eq!(check_proof(&root, 10, &listed, &fake), None);
        // An inclusion proof for another leaf's index does not name it.
        let RosterProof::Included { path, .. } = tree.prove(&leaves[2]) else {
            panic!("listed");
        };
        let moved = RosterProof::Included { index: 3, path };
        assert_eq!(check_proof(&root, 10, &leaves[2], &moved), None);
    }

    #[test]
    fn proofs_and_chunks_round_trip() {
        let tree = RosterTree::new((0..50).map(fp).collect());
        let proofs = RosterProofs {
            version: RosterVersion {
                epoch: 3,
                rotation: 1,
                seq: 9,
            },
            proofs: [fp(7), fp(70), fp(3)]
                .iter()
                .map(|f| (*f, tree.prove(f)))
                .collect(),
        };
        assert_eq!(RosterProofs::parse(&proofs.encode()), Ok(proofs));
        let set: std::collections::BTreeSet<_> = (0..3000).map(fp).collect();
        let chunks = RosterLeaves::chunks(None, &set);
        assert_eq!(chunks.len(), 3);
        let back: usize = chunks
            .iter()
            .map(|c| RosterLeaves::parse(c).unwrap().added.len())
            .sum();
        assert_eq!(back, 3000);
        assert!(chunks.iter().all(|c| c.len() < 48 * 1024));
    }
}
