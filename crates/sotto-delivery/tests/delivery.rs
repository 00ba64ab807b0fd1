//! Delivery-service checks that need no group secrets.

use proptest::prelude::*;
use sotto_delivery::{
    DeliveryError, KeyPackageStore, MAX_SEALED_DELIVERY_LEN, RoomDelivery, SealedMailbox,
};

#[test]
fn mailbox_limits_and_drains_in_order() {
    let mut m = SealedMailbox::new(2);
    m.post(b"a", vec![1]).unwrap();
    m.post(b"a", vec![2]).unwrap();
    assert!(matches!(
        m.post(b"a", vec![3]),
        Err(DeliveryError::MailboxFull)
    ));
    assert!(matches!(
        m.post(b"b", vec![0; MAX_SEALED_DELIVERY_LEN + 1]),
        Err(DeliveryError::TooLarge { .. })
    ));
    assert_eq!(m.drain(b"a"), vec![vec![1], vec![2]]);
    assert!(m.drain(b"a").is_empty());
}

proptest! {
    #[test]
    fn no_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = RoomDelivery::create(&bytes, &bytes);
        let mut kps = KeyPackageStore::default();
        let _ = kps.upload("dev", &bytes);
    }
}
