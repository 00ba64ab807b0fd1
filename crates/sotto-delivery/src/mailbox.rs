use std::collections::{HashMap, VecDeque};

use crate::DeliveryError;

/// Largest sealed delivery relayed, in bytes (one sealed audience key is
/// about 100 bytes; the margin leaves room for future fields).
pub const MAX_SEALED_DELIVERY_LEN: usize = 1024;

/// Relays sealed audience-key deliveries to listeners as opaque bytes.
///
/// The recipient is the opaque mailbox id the server already uses for that
/// listener's session. The service cannot open what it relays.
#[derive(Debug, Default)]
pub struct SealedMailbox {
    boxes: HashMap<Vec<u8>, VecDeque<Vec<u8>>>,
    per_recipient_limit: usize,
}

impl SealedMailbox {
    /// A mailbox that keeps at most `per_recipient_limit` undelivered items per
    /// recipient.
    pub fn new(per_recipient_limit: usize) -> Self {
        Self {
            boxes: HashMap::new(),
            per_recipient_limit,
        }
    }

    /// Queue `sealed` for `recipient`.
    pub fn post(&mut self, recipient: &[u8], sealed: Vec<u8>) -> Result<(), DeliveryError> {
        if sealed.len() > MAX_SEALED_DELIVERY_LEN {
            return Err(DeliveryError::TooLarge {
                len: sealed.len(),
                max: MAX_SEALED_DELIVERY_LEN,
            });
        }
        let queue = self.boxes.entry(recipient.to_vec()).or_default();
        if queue.len() >= self.per_recipient_limit {
            return Err(DeliveryError::MailboxFull);
        }
        queue.push_back(sealed);
        Ok(())
    }

    /// Take everything queued for `recipient`, oldest first.
    pub fn drain(&mut self, recipient: &[u8]) -> Vec<Vec<u8>> {
        self.boxes
            .remove(recipient)
            .map(Vec::from)
            .unwrap_or_default()
    }

    /// Number of recipients with something queued.
    pub fn recipients(&self) -> usize {
        self.boxes.len()
    }
}
