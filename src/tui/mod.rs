//! The terminal dashboard (`agt tui`).
