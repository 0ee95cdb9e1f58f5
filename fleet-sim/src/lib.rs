//! boo-fleet-sim (work in progress).
