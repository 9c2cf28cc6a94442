//! changegate: a change gate for deployment pipelines.
//!
//! The crate is laid out in one direction of dependency: [`domain`] is pure; [`pipeline`],
//! [`itsm`] and [`output`] are adapters that know the domain; [`cli`] wires them together.

pub mod cli;
pub mod config;
pub mod domain;
pub mod env;
pub mod flow;
pub mod forge;
pub mod http;
pub mod itsm;
pub mod output;
pub mod pipeline;
pub mod report;
pub mod settings;
