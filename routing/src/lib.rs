//! boo-routing (work in progress).
