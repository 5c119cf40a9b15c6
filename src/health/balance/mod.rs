//! Balancing over healthy peers.
