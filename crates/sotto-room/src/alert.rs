//! What a participant must be told: the checks that failed. Drivers print
//! them (`sotto listen`, `sotto speak`) or show them (the web client's room
//! panel); tests assert them. Each names an account by id only; drivers map
//! ids to usernames.

use sotto_proto::UserId;

/// A failed check, in plain words.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Alert {
    /// The server presented a device key for an account that the account's
    /// own device chain does not hold (or a chain that does not verify):
    /// refused.
    ForgedDevice { user: UserId, why: String },
    /// The server presented another root key for an account seen before.
    RootChanged { user: UserId },
    /// A Welcome into a group other than the room's bound stage group, or a
    /// group reset without a newer binding from the host: refused.
    ForeignGroup { why: String },
    /// The stage group holds a device that does not belong on the stage
    /// (its user is not on stage, or its key is not in their chain).
    StrayStageMember { user: Option<UserId> },
    /// The signed roster lists a key holder that is not a current device
    /// of anyone in the room: a hidden listener.
    HiddenListener { count: usize },
    /// No roster newer than this many milliseconds: rosters are withheld.
    StaleRoster { age_ms: u64 },
    /// This device's newest key is older than the rotation period plus a
    /// grace: rotations are stalled (a speaker stops sending).
    StaleKey { age_ms: u64 },
    /// A commit this device sent got no answer in time: retried.
    CommitTimedOut,
    /// (The key distributor) the server asked to admit a listener that no
    /// moderator's statement lets in (closed room: no allow; social room:
    /// followed by no host or moderator), or one a moderator banned:
    /// refused.
    AccessRefused { user: UserId, why: String },
    /// The server lists devices of this device's own account that the
    /// account's own chain does not hold: keys none of its devices added
    /// (e.g. a row the operator inserted to sign in as this account).
    UnknownOwnDevice { count: usize },
    /// The server shows the room as another kind than its host created it.
    RoomKindChanged { bound: String, shown: String },
    /// The server answered a roster question with a proof that does not
    /// verify against the signed roster: it lied about who holds the key.
    ForgedRosterProof,
}

impl std::fmt::Display for Alert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Alert::ForgedDevice { user, why } => write!(
                f,
                "refused a device key the server presented for account {}: {why}",
                user.short()
            ),
            Alert::RootChanged { user } => write!(
                f,
                "the root key of account {} CHANGED since it was first seen; its devices are refused until you accept the change",
                user.short()
            ),
            Alert::ForeignGroup { why } => write!(f, "refused a stage group: {why}"),
            Alert::StrayStageMember { user } => match user {
                Some(u) => write!(
                    f,
                    "the stage group holds a device of {} that does not belong on the stage; removing it",
                    u.short()
                ),
                None => write!(
                    f,
                    "the stage group holds a device of no known account; removing it"
                ),
            },
            Alert::HiddenListener { count } => write!(
                f,
                "HIDDEN LISTENER: the signed roster lists {count} key holder(s) who are not in the room"
            ),
            Alert::StaleRoster { age_ms } => write!(
                f,
                "no roster for {} s: the server may be withholding it",
                age_ms / 1000
            ),
            Alert::StaleKey { age_ms } => write!(
                f,
                "the room key is {} s old: key rotations are stalled, so sending stopped",
                age_ms / 1000
            ),
            Alert::CommitTimedOut => write!(f, "a stage commit got no answer in time; retrying"),
            Alert::AccessRefused { user, why } => {
                write!(f, "refused the room key to account {}: {why}", user.short())
            }
            Alert::ForgedRosterProof => write!(
                f,
                "the server answered a roster check with a FORGED proof: it lies about who holds the room key"
            ),
            Alert::UnknownOwnDevice { count } => write!(
                f,
                "the server lists {count} device(s) of YOUR account that none of your devices added: someone may sign in as you (they get no room keys)"
            ),
            Alert::RoomKindChanged { bound, shown } => write!(
                f,
                "the server shows this room as {shown}, but its host created it as {bound}; keys follow {bound}"
            ),
        }
    }
}
