//! psk's integration tests, one binary: each former `tests/*.rs` is a
//! module here, so `common` compiles once and psk is linked once instead of
//! 28 times. Run one part with `cargo test --test it bad_input::` (a module
//! path filter); the data the tests read stays in `tests/contract/` and
//! `tests/corpus/`.

mod common;

mod alert_rules;
mod apply_deliver;
mod apply_exec;
mod apply_generators;
mod apply_interrupt;
mod bad_input;
mod calendar;
mod cli;
mod client_bulk;
mod client_errors;
mod client_limit;
mod client_retry;
mod completions;
mod concurrent_apply;
mod config_corpus;
mod config_examples;
mod config_policy;
mod contract;
mod custody_age;
mod custody_commands;
mod custody_disk;
mod custody_mistakes;
mod docs;
mod end_to_end;
mod faults;
#[cfg(unix)]
mod file_modes;
#[cfg(unix)]
mod first_hour;
mod health;
mod import_terraform;
mod init;
mod logging;
mod messages;
mod no_secrets;
mod plan_progress;
mod plan_review;
mod plan_verdict;
mod planner_props;
mod pr_comment;
mod remote_state;
mod render_snapshots;
mod sandbox_api;
mod sandbox_cli;
mod sdk_conformance;
mod state_store;
mod status;
mod store_contract;
#[cfg(unix)]
mod strongswan;
mod transport;
mod unmanaged;
mod verify;
mod workflows;
