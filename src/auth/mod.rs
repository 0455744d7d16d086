//! Authentication (to be written).
