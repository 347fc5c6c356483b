//! Shared conformance suites.
