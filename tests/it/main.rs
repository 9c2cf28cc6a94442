//! Integration tests: the real binary against real files and in-process fakes.
//! One test binary (modules below) keeps link time down.

mod action;
mod annotate;
mod examples;
mod gate;
mod jira;
mod servicenow;
mod settings;
mod support;
