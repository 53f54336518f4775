//! nines-chaos.
