//! Tenant-isolation attacks: survivors.

#[allow(unused_imports)]
use super::*;
