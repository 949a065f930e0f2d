//! NATS tests
