//! nines-testkit.
