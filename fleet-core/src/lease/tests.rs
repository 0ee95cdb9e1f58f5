use super::*;

#[test]
fn second_acquire_is_denied_while_held_then_allowed_after_expiry() {
    let a = InMemoryHostAccess::new(1_000);
    let first = a.acquire("gpu", "bench", "bench:1", 0).unwrap();
    let denied = a.acquire("gpu", "eval", "eval:2", 999).unwrap_err();
    assert_eq!(denied.held_by.as_ref().map(|l| l.token), Some(first.token));
    assert!(denied.to_string().contains("bench:1"), "{denied}");
    // Other hosts are independent.
    assert!(a.acquire("cpu", "eval", "eval:2", 999).is_ok());
    // Expired: a new holder gets it, and the old holder can no longer renew or release it.
    let second = a.acquire("gpu", "eval", "eval:2", 1_000).unwrap();
    assert_ne!(second.token, first.token);
    assert!(a.renew(&first, 1_001).is_err());
    assert!(!a.release(&first));
    assert_eq!(a.current("gpu", 1_001), Some(second));
}

#[test]
fn renew_extends_and_release_frees() {
    let a = InMemoryHostAccess::new(1_000);
    let l = a.acquire("gpu", "bench", "bench:1", 0).unwrap();
    let l = a.renew(&l, 900).unwrap();
    assert_eq!(l.expires_at, 1_900);
    assert!(a.acquire("gpu", "bench", "bench:2", 1_500).is_err());
    assert!(a.release(&l));
    assert_eq!(a.current("gpu", 1_500), None);
    assert!(a.acquire("gpu", "bench", "bench:2", 1_500).is_ok());
}

#[test]
fn usable_as_a_shared_trait_object() {
    let a: std::sync::Arc<dyn HostAccess + Send + Sync> =
        std::sync::Arc::new(InMemoryHostAccess::new(10));
    let l = a.acquire("gpu", "bench", "b", 0).unwrap();
    assert!(l.is_active(9) && !l.is_active(10));
}
