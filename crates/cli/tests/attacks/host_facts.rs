//! Tenant-isolation attacks: host_facts.

#[allow(unused_imports)]
use super::*;
