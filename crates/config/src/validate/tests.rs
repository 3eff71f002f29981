//! Tests of validation and compilation.
