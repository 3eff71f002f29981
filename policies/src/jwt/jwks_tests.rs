//! JWKS tests.
