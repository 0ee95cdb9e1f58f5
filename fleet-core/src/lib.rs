//! boo-fleet-core (work in progress).
