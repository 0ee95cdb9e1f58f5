//! boo-provider-registry (work in progress).
