//! enforcer: eBPF host network enforcer and monitor.
//!
//! Data flows one way: packets → kernel verdicts and counters → `dataplane` →
//! `status`/API. Policy flows the other way: file → `policy` (parse, validate,
//! compile) → `dataplane` (atomic epoch flip). Only `dataplane` touches aya; every
//! other module is plain Rust that unit tests reach without root.

pub mod agent;
pub mod api;
pub mod baseline;
pub mod cli;
pub mod config;
pub mod dataplane;
pub mod flows;
pub mod graph;
pub mod identity;
pub mod inventory;
pub mod logging;
pub mod metrics;
pub mod netns;
pub mod paths;
pub mod policy;
pub mod status;
pub mod web;
