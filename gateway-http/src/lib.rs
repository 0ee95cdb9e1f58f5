//! boo-gateway-http (work in progress).
