//! Tenant-isolation attacks: build_products.

#[allow(unused_imports)]
use super::*;
