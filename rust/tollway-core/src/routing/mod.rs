//! Routing: the `gateway-load-balancing-config` schema ([`config`]) and target selection
//! with passive health ([`select`]).

pub mod config;
pub mod select;

pub use select::*;
