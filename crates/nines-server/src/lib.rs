//! nines-server.
