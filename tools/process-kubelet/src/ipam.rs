//! Pod IP addresses: the pod CIDR and who holds which address in it.
//!
//! The kubelet is the only allocator for `--pod-cidr` (default
//! `10.88.1.0/24`, inside the bridge's `10.88.0.0/16`). Addresses are handed
//! out round-robin, like the `host-local` CNI plugin, so an address that was
//! just released (and may still sit in an EndpointSlice or a peer's ARP cache)
//! is the last to be reused.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// An IPv4 network, `A.B.C.D/P`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

/// The string is not `A.B.C.D/P` with `P <= 32`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IPv4 CIDR (A.B.C.D/P)")]
pub struct CidrError(String);

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_string());
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Ipv4Cidr {
    /// `addr/prefix` (a prefix above 32 is taken as 32); `addr` may be a
    /// host address inside the network.
    pub const fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        Ipv4Cidr {
            addr,
            prefix: if prefix > 32 { 32 } else { prefix },
        }
    }

    /// The address as written (for a bridge: its own address).
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) | !self.mask())
    }

    /// Whether `ip` is inside this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// Whether all of `other` is inside this network.
    pub fn covers(&self, other: &Ipv4Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network())
    }
}

/// The addresses of one pod CIDR: which are taken, and where the next search starts.
#[derive(Debug, Clone)]
pub struct IpPool {
    first: u32,
    last: u32,
    reserved: BTreeSet<u32>,
    in_use: BTreeSet<u32>,
    next: u32,
}

impl IpPool {
    /// A pool over the usable hosts of `cidr` (not the network or broadcast
    /// address of a network wider than /31), minus `reserved` (the gateway).
    pub fn new(cidr: Ipv4Cidr, reserved: &[Ipv4Addr]) -> Self {
        let (mut first, mut last) = (u32::from(cidr.network()), u32::from(cidr.broadcast()));
        if cidr.prefix() < 31 {
            first += 1;
            last -= 1;
        }
        IpPool {
            first,
            last,
            reserved: reserved.iter().map(|a| u32::from(*a)).collect(),
            in_use: BTreeSet::new(),
            next: first,
        }
    }

    /// The next free address after the last one handed out, wrapping around.
    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let size = u64::from(self.last - self.first) + 1;
        let mut candidate = self.next;
        for _ in 0..size {
            let taken = self.in_use.contains(&candidate) || self.reserved.contains(&candidate);
            let after = if candidate >= self.last {
                self.first
            } else {
                candidate + 1
            };
            if !taken {
                self.in_use.insert(candidate);
                self.next = after;
                return Some(Ipv4Addr::from(candidate));
            }
            candidate = after;
        }
        None
    }

    /// Give `ip` back. Releasing an address that is not held does nothing.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.in_use.remove(&u32::from(ip));
    }

    /// How many addresses are held.
    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

/// A cheap, cloneable handle on the kubelet's one [`IpPool`].
///
/// A std `Mutex`: allocation is a few set operations and never awaits, so the
/// lock is never held across `.await`.
#[derive(Debug, Clone)]
pub struct Ipam {
    pool: Arc<Mutex<IpPool>>,
}

impl Ipam {
    /// Share `pool`.
    pub fn new(pool: IpPool) -> Self {
        Ipam {
            pool: Arc::new(Mutex::new(pool)),
        }
    }

    /// See [`IpPool::allocate`].
    pub fn allocate(&self) -> Option<Ipv4Addr> {
        self.pool.lock().map_or(None, |mut p| p.allocate())
    }

    /// See [`IpPool::release`].
    pub fn release(&self, ip: Ipv4Addr) {
        if let Ok(mut p) = self.pool.lock() {
            p.release(ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parsing_and_arithmetic() {
        let c: Ipv4Cidr = "10.88.1.0/24".parse().unwrap();
        assert_eq!(c.network(), ip("10.88.1.0"));
        assert_eq!(c.broadcast(), ip("10.88.1.255"));
        assert!(c.contains(ip("10.88.1.77")));
        assert!(!c.contains(ip("10.88.2.1")));
        let bridge: Ipv4Cidr = "10.88.0.1/16".parse().unwrap();
        assert_eq!(bridge.network(), ip("10.88.0.0"));
        assert_eq!(bridge.addr(), ip("10.88.0.1"));
        assert!(bridge.covers(&c));
        assert!(!c.covers(&bridge));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("1.2.3.4")));
        for bad in ["10.88.1.0", "10.88.1.0/33", "10.88.1/24", "x/8"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn allocation_skips_network_broadcast_and_reserved() {
        let mut pool = IpPool::new("10.88.1.0/30".parse().unwrap(), &[ip("10.88.1.1")]);
        assert_eq!(pool.allocate(), Some(ip("10.88.1.2")));
        assert_eq!(
            pool.allocate(),
            None,
            "/30 has two hosts and one is reserved"
        );
        pool.release(ip("10.88.1.2"));
        assert_eq!(pool.allocate(), Some(ip("10.88.1.2")));
    }

    #[test]
    fn allocation_is_round_robin_and_wraps() {
        let mut pool = IpPool::new("10.88.1.0/29".parse().unwrap(), &[]);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        assert_eq!((a, b), (ip("10.88.1.1"), ip("10.88.1.2")));
        pool.release(a);
        // a was just released: the pool moves on instead of reusing it
        assert_eq!(pool.allocate(), Some(ip("10.88.1.3")));
        for want in ["10.88.1.4", "10.88.1.5", "10.88.1.6", "10.88.1.1"] {
            assert_eq!(pool.allocate(), Some(ip(want)));
        }
        assert_eq!(pool.allocate(), None);
        assert_eq!(pool.in_use(), 6);
    }

    #[test]
    fn default_pod_cidr_has_254_addresses_all_inside_it() {
        let cidr: Ipv4Cidr = "10.88.1.0/24".parse().unwrap();
        let ipam = Ipam::new(IpPool::new(cidr, &[ip("10.88.0.1")]));
        let mut seen = BTreeSet::new();
        while let Some(a) = ipam.allocate() {
            assert!(cidr.contains(a) && a != cidr.network() && a != cidr.broadcast());
            assert!(seen.insert(a));
        }
        assert_eq!(seen.len(), 254);
    }
}
