//! The generic pipeline (in progress).
