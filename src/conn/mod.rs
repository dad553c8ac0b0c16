//! The connection source: every socket on the host, its process, its whole life.

pub mod bpf;
pub mod btf;
pub mod connects;
pub mod container;
pub mod diag;
pub mod fd_iter;
pub mod netns;
pub mod owners;
pub mod procs;
pub mod source;
pub mod table;
pub mod tcp_info;
