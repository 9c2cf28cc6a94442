//! Integration tests: the real binary against real files and in-process fakes.
//! One test binary (modules below) keeps link time down.

mod action;
mod annotate;
mod announce;
mod children;
mod cli;
mod evidence;
mod examples;
mod flow;
mod gate;
mod hostile;
mod import;
mod jira;
mod ledgers;
mod release;
mod report;
mod serve;
mod servicenow;
mod settings;
mod simulate;
mod support;
mod sync;
mod verify;
