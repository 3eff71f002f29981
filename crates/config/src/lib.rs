//! Tollgate's policy file: the serde model (contract §2), validation that reports every
//! problem at once with its YAML path and line, and compilation into [`CompiledConfig`]:
//! routing tables and the flattened effective policy chain of every (product, operation).
//! No I/O happens here.

pub mod compiled;
pub mod model;
pub mod template;

pub use compiled::*;
pub use model::PolicyFile;
pub use template::{Part, Template, TemplateSource, Var};
