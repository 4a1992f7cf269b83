//! Tenant-isolation attacks: server_bounds.

#[allow(unused_imports)]
use super::*;
