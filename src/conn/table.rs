//! Who may hold a listener's connections: at most `max` in all and `per_address` from one
//! address (an IPv6 address counts by its /64, what one host is given). At the cap a newcomer is
//! not simply turned away: the connection that has waited longest for a head it has not sent is
//! closed to make room, else the one idle longest; only when every connection is inside a request
//! is the newcomer refused. So a stranger holding slow heads cannot keep a caller out, and what a
//! stranger holds is what the first to arrive must give up (Envoy's overload manager shortens
//! those connections' timeouts under pressure; closing them outright is the same choice taken all
//! the way).

use super::Activity;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// A listener's connection table.
#[derive(Debug)]
pub struct Table {
    max: usize,
    per_address: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    by_address: HashMap<IpAddr, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    next_seq: u64,
}

#[derive(Debug)]
struct Slot {
    activity: Arc<Activity>,
    seq: u64,
    /// Closed to make room: no longer counted, not chosen again.
    evicted: bool,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is held by a connection inside a request.
    Full,
    /// Its address holds `per_address` connections already.
    PerAddress,
}

/// An admitted connection; its slot is freed when this drops.
#[derive(Debug)]
pub struct Admitted {
    table: Arc<Table>,
    slot: usize,
    address: IpAddr,
    /// Whether a connection was closed to make room for this one.
    pub evicted_another: bool,
}

/// The address a connection counts under: IPv4 as is (also when mapped into IPv6), IPv6 by /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Table {
    /// A table of `max` connections, `per_address` from one address (0: no such limit).
    pub fn new(max: usize, per_address: usize) -> Arc<Self> {
        Arc::new(Table {
            max,
            per_address,
            state: Mutex::default(),
        })
    }

    /// The connection cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The per-address cap (0: none).
    pub fn per_address(&self) -> usize {
        self.per_address
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections counted now.
    pub fn count(&self) -> usize {
        self.lock().open
    }

    /// Admits a connection from `peer` whose activity is `activity`, closing another to make room
    /// when the table is full (see the [module docs](self)).
    pub fn admit(self: &Arc<Self>, peer: IpAddr, activity: &Arc<Activity>) -> Result<Admitted, Refused> {
        let address = address_key(peer);
        let mut st = self.lock();
        let from_address = st.by_address.get(&address).copied().unwrap_or(0);
        if self.per_address > 0 && from_address >= self.per_address {
            return Err(Refused::PerAddress);
        }
        let mut evicted_another = false;
        if st.open >= self.max {
            let Some(victim) = victim(&st.slots) else {
                return Err(Refused::Full);
            };
            let slot = st.slots[victim].as_mut().expect("chosen among the present");
            slot.evicted = true;
            slot.activity.evict();
            st.open -= 1;
            evicted_another = true;
        }
        st.open += 1;
        *st.by_address.entry(address).or_insert(0) += 1;
        let seq = st.next_seq;
        st.next_seq += 1;
        let entry = Some(Slot {
            activity: Arc::clone(activity),
            seq,
            evicted: false,
        });
        let slot = match st.free.pop() {
            Some(i) => {
                st.slots[i] = entry;
                i
            }
            None => {
                st.slots.push(entry);
                st.slots.len() - 1
            }
        };
        Ok(Admitted {
            table: Arc::clone(self),
            slot,
            address,
            evicted_another,
        })
    }
}

/// The connection to close for a newcomer: the oldest waiting for a head, else the oldest idle.
fn victim(slots: &[Option<Slot>]) -> Option<usize> {
    let mut best: Option<(u8, u64, usize)> = None;
    for (i, s) in slots.iter().enumerate() {
        let Some(s) = s else { continue };
        if s.evicted {
            continue;
        }
        let rank = match s.activity.phase() {
            super::Phase::InRequest => continue,
            super::Phase::Head => 0,
            super::Phase::Idle => 1,
        };
        if best.is_none_or(|(r, seq, _)| (rank, s.seq) < (r, seq)) {
            best = Some((rank, s.seq, i));
        }
    }
    best.map(|(_, _, i)| i)
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut st = self.table.lock();
        if let Some(slot) = st.slots[self.slot].take() {
            if !slot.evicted {
                st.open -= 1;
            }
        }
        st.free.push(self.slot);
        if let Some(n) = st.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                st.by_address.remove(&self.address);
            }
        }
    }
}

/// Whether `activity` was chosen to make room.
pub(super) fn is_evicted(activity: &Activity) -> bool {
    activity.evicted.load(Ordering::Acquire)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn per_address_cap_counts_ipv6_by_its_64_and_frees_on_drop() {
        let t = Table::new(10, 2);
        let a = Arc::new(Activity::default());
        let one = t.admit(ip("2001:db8::1"), &a).unwrap();
        let _two = t.admit(ip("2001:db8::2"), &a).unwrap();
        assert_eq!(t.admit(ip("2001:db8::3"), &a).unwrap_err(), Refused::PerAddress);
        assert!(t.admit(ip("2001:db8:0:1::1"), &a).is_ok(), "another /64");
        let _v4 = t.admit(ip("::ffff:10.0.0.1"), &a).unwrap();
        let _v4b = t.admit(ip("10.0.0.1"), &a).unwrap();
        assert_eq!(t.admit(ip("10.0.0.1"), &a).unwrap_err(), Refused::PerAddress);
        drop(one);
        assert!(t.admit(ip("2001:db8::3"), &a).is_ok());
    }

    #[test]
    fn at_the_cap_the_oldest_head_goes_first_then_the_oldest_idle_and_requests_never() {
        let t = Table::new(3, 0);
        let (busy, idle, head) = (
            Arc::new(Activity::default()),
            Arc::new(Activity::default()),
            Arc::new(Activity::default()),
        );
        busy.started.store(1, Ordering::Relaxed);
        idle.started.store(1, Ordering::Relaxed);
        idle.finished.store(1, Ordering::Relaxed);
        let _b = t.admit(ip("10.0.0.1"), &busy).unwrap();
        let _i = t.admit(ip("10.0.0.2"), &idle).unwrap();
        let _h = t.admit(ip("10.0.0.3"), &head).unwrap();
        let new = Arc::new(Activity::default());
        let n1 = t.admit(ip("10.0.0.4"), &new).unwrap();
        assert!(n1.evicted_another);
        assert!(is_evicted(&head) && !is_evicted(&idle) && !is_evicted(&busy));
        // The newcomer itself waits for its head: it is now the one to go, before the idle one.
        let n2 = t.admit(ip("10.0.0.5"), &Arc::new(Activity::default())).unwrap();
        assert!(is_evicted(&new) && !is_evicted(&idle));
        drop((n1, n2));
        assert_eq!(t.count(), 2);
        // Inside requests only: refused.
        let full = Table::new(1, 0);
        let _x = full.admit(ip("10.0.0.1"), &busy).unwrap();
        assert_eq!(full.admit(ip("10.0.0.2"), &busy).unwrap_err(), Refused::Full);
    }
}
