//! boo-model-ref (work in progress).
