//! Tenant-isolation attacks: warm_state.

#[allow(unused_imports)]
use super::*;
