//! changegate: a change gate for deployment pipelines.
//!
//! The crate is laid out in one direction of dependency: [`domain`] is pure; [`pipeline`],
//! [`itsm`] and [`output`] are adapters that know the domain; [`flow`] runs the gate on them
//! and returns outcomes; [`cli`] is the door that presents them.

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
pub mod serve;
pub mod settings;
pub mod work;
