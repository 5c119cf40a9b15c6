//! Retry helpers for plain async code (being written).
