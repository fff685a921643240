//! What each client address holds open (connections, request bodies), for the per-address
//! caps: an address is forgotten when it holds nothing.

use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, Default)]
pub struct AddressCounts(HashMap<IpAddr, usize>);

impl AddressCounts {
    /// Whether `address` holds `cap` already.
    pub fn at_cap(&self, address: IpAddr, cap: usize) -> bool {
        self.0.get(&address).is_some_and(|n| *n >= cap)
    }

    pub fn add(&mut self, address: IpAddr) {
        *self.0.entry(address).or_default() += 1;
    }

    pub fn remove(&mut self, address: IpAddr) {
        if let Some(n) = self.0.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&address);
            }
        }
    }
}
