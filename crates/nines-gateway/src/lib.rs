//! nines-gateway.
