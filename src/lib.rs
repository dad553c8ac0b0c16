//! connbeat: tells which process talks to which.
//!
//! Two sources feed one pipeline: [`conn`] enumerates every socket through netlink
//! `sock_diag` and attributes it to its process; deep inspection turns captured traffic
//! into protocol transactions. [`publish`] moves their [`event::Event`]s to the one
//! enabled [`output`]; [`monitor`] counts everything on the way.

pub mod agent;
pub mod community_id;
pub mod config;
pub mod conn;
pub mod ecs;
pub mod event;
pub mod fast_hash;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod inspect;
pub mod logging;
pub mod monitor;
pub mod output;
pub mod owner;
pub mod processors;
pub mod publish;
pub mod topology;
