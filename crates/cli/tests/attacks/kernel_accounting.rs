//! Tenant-isolation attacks: kernel_accounting.

#[allow(unused_imports)]
use super::*;
