//! Wire protocol (to be written).
