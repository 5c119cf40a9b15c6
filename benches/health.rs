//! Per-call cost of the health layer (written with the layer).
fn main() {}
