//! nines-raft.
