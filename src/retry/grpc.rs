//! gRPC retries (being written).
