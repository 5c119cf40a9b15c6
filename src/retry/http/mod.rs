//! HTTP retries (being written).
