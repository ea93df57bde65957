//! Access-control policies (LDD3 ch. 6 "Access Control on a Device File") as
//! small state machines, generic over the caller's identity. The drivers hold
//! their own lock around each call (except [`SingleOpen`], which is an atomic,
//! as LDD3's `scull_s_available`), and decide how a caller waits.
//!
//! Identity: on Linux `Id` is a uid; on Windows it is the caller's user SID.

use crate::error::{Error, Result};
use crate::sync::{AtomicBool, Ordering};

/// Who is opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller<Id> {
    /// Real identity (uid / token user).
    pub uid: Id,
    /// Effective identity (euid; on Windows the same SID).
    pub euid: Id,
    /// May override the policy (`CAP_DAC_OVERRIDE` / an administrator).
    pub privileged: bool,
}

impl<Id: Copy> Caller<Id> {
    /// A caller whose real and effective identities are the same.
    pub fn new(id: Id, privileged: bool) -> Self {
        Caller { uid: id, euid: id, privileged }
    }
}

/// scullsingle: one open at a time, system-wide. Lock-free.
#[derive(Debug, Default)]
pub struct SingleOpen {
    busy: AtomicBool,
}

impl SingleOpen {
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        SingleOpen { busy: AtomicBool::new(false) }
    }

    #[cfg(loom)]
    pub fn new() -> Self {
        SingleOpen { busy: AtomicBool::new(false) }
    }

    /// Claims the device; `Busy` if already open.
    pub fn open(&self) -> Result<()> {
        self.busy
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .map(|_| ())
            .map_err(|_| Error::Busy)
    }

    /// Releases the claim.
    pub fn release(&self) {
        self.busy.store(false, Ordering::Release);
    }

    pub fn is_open(&self) -> bool {
        self.busy.load(Ordering::Acquire)
    }
}

/// The state shared by sculluid and scullwuid: an open count and the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<Id> {
    count: u32,
    owner: Option<Id>,
}

impl<Id: Copy + PartialEq> Default for Owner<Id> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Id: Copy + PartialEq> Owner<Id> {
    pub const fn new() -> Self {
        Owner { count: 0, owner: None }
    }

    /// LDD3's test: free, or held by the caller's uid or euid, or the caller
    /// may override.
    pub fn available(&self, c: &Caller<Id>) -> bool {
        self.admits(c.uid, c.euid, || c.privileged)
    }

    /// The same test in LDD3's order, with the privilege check last and lazy:
    /// `privileged` runs only when the device is held by another user. (On
    /// Linux it is `capable(CAP_DAC_OVERRIDE)`, which audits and marks the
    /// task PF_SUPERPRIV, so it must not run for the owner's own opens.)
    pub fn admits(&self, uid: Id, euid: Id, privileged: impl FnOnce() -> bool) -> bool {
        self.count == 0 || self.owner == Some(uid) || self.owner == Some(euid) || privileged()
    }

    fn take_uid(&mut self, uid: Id) {
        if self.count == 0 {
            self.owner = Some(uid);
        }
        self.count += 1;
    }

    /// Drops one open; true when that was the last.
    fn put(&mut self) -> bool {
        self.count = self.count.saturating_sub(1);
        if self.count == 0 {
            self.owner = None;
        }
        self.count == 0
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn owner(&self) -> Option<Id> {
        self.owner
    }
}

/// sculluid: many opens, one user at a time; others get `Busy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnerUid<Id> {
    state: Owner<Id>,
}

impl<Id: Copy + PartialEq> Default for OwnerUid<Id> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Id: Copy + PartialEq> OwnerUid<Id> {
    pub const fn new() -> Self {
        OwnerUid { state: Owner::new() }
    }

    pub fn open(&mut self, c: &Caller<Id>) -> Result<()> {
        self.open_lazy(c.uid, c.euid, || c.privileged)
    }

    /// [`OwnerUid::open`] asking for the privilege only when it decides (see
    /// [`Owner::admits`]).
    pub fn open_lazy(&mut self, uid: Id, euid: Id, privileged: impl FnOnce() -> bool) -> Result<()> {
        if !self.state.admits(uid, euid, privileged) {
            return Err(Error::Busy);
        }
        self.state.take_uid(uid);
        Ok(())
    }

    pub fn release(&mut self) {
        self.state.put();
    }

    pub fn state(&self) -> &Owner<Id> {
        &self.state
    }
}

/// scullwuid: like sculluid, but a refused caller waits (`WouldBlock`) and is
/// woken when the owner's last handle closes (`release` returns true).
/// A non-blocking caller turns `WouldBlock` into `EAGAIN`, as LDD3 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitUid<Id> {
    state: Owner<Id>,
}

impl<Id: Copy + PartialEq> Default for WaitUid<Id> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Id: Copy + PartialEq> WaitUid<Id> {
    pub const fn new() -> Self {
        WaitUid { state: Owner::new() }
    }

    /// Opens, or says the caller must wait and try again when woken.
    pub fn open(&mut self, c: &Caller<Id>) -> Result<()> {
        self.open_lazy(c.uid, c.euid, || c.privileged)
    }

    /// [`WaitUid::open`] asking for the privilege only when it decides (see
    /// [`Owner::admits`]).
    pub fn open_lazy(&mut self, uid: Id, euid: Id, privileged: impl FnOnce() -> bool) -> Result<()> {
        if !self.state.admits(uid, euid, privileged) {
            return Err(Error::WouldBlock);
        }
        self.state.take_uid(uid);
        Ok(())
    }

    /// Releases one open. True when the device became free: wake the waiters
    /// (all of them; each retries `open`).
    #[must_use]
    pub fn release(&mut self) -> bool {
        self.state.put()
    }

    pub fn state(&self) -> &Owner<Id> {
        &self.state
    }
}

/// How many scullpriv devices a load keeps at once, on every kernel: 32,
/// because Windows keys them by process and 16 live openers are too few.
pub const PRIV_SLOTS: usize = 32;

/// scullpriv: one private device per key (LDD3: per controlling tty), created
/// on first open, in a fixed table of `N` entries. A full table is `Busy`
/// (LDD3's list grew without bound).
///
/// With [`PrivTable::lookup_or_create`] a device is kept until unload (the
/// Linux module and the model: a tty outlives its openers). With
/// [`PrivTable::open_reaping`] / [`PrivTable::close`] (the Windows driver,
/// keyed by process) each device also counts the files open on it, and a
/// device whose owner is gone and that no file holds is freed, so its key
/// can be used again by a new owner without inheriting the data.
pub struct PrivTable<K, D, const N: usize> {
    entries: [Option<(K, D)>; N],
    /// Files open on each entry (only [`PrivTable::open_reaping`] and
    /// [`PrivTable::close`] count them).
    opens: [u32; N],
}

impl<K: PartialEq, D, const N: usize> Default for PrivTable<K, D, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: PartialEq, D, const N: usize> PrivTable<K, D, N> {
    pub fn new() -> Self {
        PrivTable { entries: core::array::from_fn(|_| None), opens: [0; N] }
    }

    /// The index of `key`'s device, creating it with `make` if absent.
    pub fn lookup_or_create(&mut self, key: K, make: impl FnOnce() -> Result<D>) -> Result<usize> {
        if let Some(i) = self.find(&key) {
            return Ok(i);
        }
        let free = self.entries.iter().position(|e| e.is_none()).ok_or(Error::Busy)?;
        self.entries[free] = Some((key, make()?));
        Ok(free)
    }

    /// Frees every device that no file holds open and whose owner `gone`
    /// says has gone (a process that exited). Returns how many it freed.
    pub fn reap(&mut self, mut gone: impl FnMut(&K, &D) -> bool) -> usize {
        let mut freed = 0;
        for (e, &opens) in self.entries.iter_mut().zip(self.opens.iter()) {
            if opens == 0 && e.as_ref().is_some_and(|(k, d)| gone(k, d)) {
                *e = None;
                freed += 1;
            }
        }
        freed
    }

    /// Opens one more file on `key`'s device: first [`PrivTable::reap`]s,
    /// then finds `key`'s device or creates it with `make`, and counts the
    /// file. A device still held open is never freed, so the index the
    /// caller keeps for the file stays valid until its [`PrivTable::close`].
    pub fn open_reaping(&mut self, key: K, gone: impl FnMut(&K, &D) -> bool, make: impl FnOnce() -> Result<D>) -> Result<usize> {
        self.reap(gone);
        let i = self.lookup_or_create(key, make)?;
        self.opens[i] = self.opens[i].saturating_add(1);
        Ok(i)
    }

    /// A file opened with [`PrivTable::open_reaping`] on device `index` closed.
    pub fn close(&mut self, index: usize) {
        if let Some(o) = self.opens.get_mut(index) {
            *o = o.saturating_sub(1);
        }
    }

    /// Files open on device `index`.
    pub fn opens(&self, index: usize) -> u32 {
        self.opens.get(index).copied().unwrap_or(0)
    }

    /// The index of `key`'s device.
    pub fn find(&self, key: &K) -> Option<usize> {
        self.entries.iter().position(|e| matches!(e, Some((k, _)) if k == key))
    }

    pub fn get_mut(&mut self, index: usize) -> Option<&mut D> {
        self.entries.get_mut(index)?.as_mut().map(|(_, d)| d)
    }

    pub fn get(&self, index: usize) -> Option<&D> {
        self.entries.get(index)?.as_ref().map(|(_, d)| d)
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.entries.iter().filter(|e| e.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Visits (key, device) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &D)> {
        self.entries.iter().filter_map(|e| e.as_ref().map(|(k, d)| (k, d)))
    }

    /// Drops every device (unload).
    pub fn clear(&mut self) {
        for e in self.entries.iter_mut() {
            *e = None;
        }
        self.opens = [0; N];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_open_is_exclusive() {
        let s = SingleOpen::new();
        assert_eq!(s.open(), Ok(()));
        assert_eq!(s.open(), Err(Error::Busy));
        assert!(s.is_open());
        s.release();
        assert_eq!(s.open(), Ok(()));
    }

    #[test]
    fn owner_uid_policy() {
        let mut u = OwnerUid::<u32>::new();
        let alice = Caller::new(1000, false);
        let bob = Caller::new(1001, false);
        let root = Caller::new(0, true);
        assert_eq!(u.open(&alice), Ok(()));
        assert_eq!(u.open(&alice), Ok(()), "same user opens again");
        assert_eq!(u.open(&bob), Err(Error::Busy));
        // bob running a setuid-alice program: euid matches.
        assert_eq!(u.open(&Caller { uid: 1001, euid: 1000, privileged: false }), Ok(()));
        assert_eq!(u.open(&root), Ok(()), "CAP_DAC_OVERRIDE overrides");
        assert_eq!(u.state().count(), 4);
        assert_eq!(u.state().owner(), Some(1000));
        for _ in 0..4 {
            u.release();
        }
        assert_eq!(u.state().owner(), None);
        assert_eq!(u.open(&bob), Ok(()));
        assert_eq!(u.state().owner(), Some(1001));
    }

    #[test]
    fn wait_uid_policy() {
        let mut w = WaitUid::<u32>::new();
        let alice = Caller::new(1000, false);
        let bob = Caller::new(1001, false);
        assert_eq!(w.open(&alice), Ok(()));
        assert_eq!(w.open(&alice), Ok(()));
        assert_eq!(w.open(&bob), Err(Error::WouldBlock));
        assert!(!w.release(), "one handle still open");
        assert_eq!(w.open(&bob), Err(Error::WouldBlock));
        assert!(w.release(), "last close wakes waiters");
        assert_eq!(w.open(&bob), Ok(()));
        assert_eq!(w.open(&alice), Err(Error::WouldBlock));
    }

    #[test]
    fn priv_table() {
        let mut t = PrivTable::<u32, u64, 2>::new();
        let a = t.lookup_or_create(7, || Ok(70)).unwrap();
        assert_eq!(t.lookup_or_create(7, || panic!("exists")).unwrap(), a);
        let b = t.lookup_or_create(8, || Ok(80)).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.lookup_or_create(9, || Ok(90)), Err(Error::Busy));
        assert_eq!(t.lookup_or_create(9, || Err(Error::NoMemory)), Err(Error::Busy));
        assert_eq!(t.get(a), Some(&70));
        *t.get_mut(b).unwrap() += 1;
        assert_eq!(t.get(b), Some(&81));
        assert_eq!(t.len(), 2);
        t.clear();
        assert!(t.is_empty());
        assert_eq!(t.lookup_or_create(1, || Err(Error::NoMemory)), Err(Error::NoMemory));
        assert!(t.is_empty(), "a failed create leaves no entry");
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;

    #[test]
    fn euid_match_and_owner_is_the_real_uid() {
        let mut u = OwnerUid::<u32>::new();
        // A setuid program: real uid 1001, effective 0 (not privileged here).
        let setuid = Caller { uid: 1001, euid: 0, privileged: false };
        u.open(&setuid).unwrap();
        assert_eq!(u.state().owner(), Some(1001), "LDD3 records the real uid");
        assert_eq!(u.open(&Caller::new(0, false)), Err(Error::Busy), "the owner is 1001, not the euid 0");
        assert_eq!(u.open(&Caller { uid: 7, euid: 1001, privileged: false }), Ok(()), "matches on the caller's euid");
        assert_eq!(u.open(&Caller::new(1002, false)), Err(Error::Busy));
    }

    /// The privilege check runs only when the device is held by someone else
    /// (LDD3's order; on Linux `capable()` audits and sets PF_SUPERPRIV).
    #[test]
    fn privilege_is_asked_only_when_the_owner_differs() {
        use core::cell::Cell;
        let asked = Cell::new(0);
        let ask = |answer: bool| {
            let asked = &asked;
            move || {
                asked.set(asked.get() + 1);
                answer
            }
        };
        let mut u = OwnerUid::<u32>::new();
        assert_eq!(u.open_lazy(1000, 1000, ask(false)), Ok(()), "free device");
        assert_eq!(u.open_lazy(1000, 1000, ask(false)), Ok(()), "the owner again");
        assert_eq!(u.open_lazy(7, 1000, ask(false)), Ok(()), "the owner's euid");
        assert_eq!(asked.get(), 0, "no privilege check while the identities decide");
        assert_eq!(u.open_lazy(1001, 1001, ask(false)), Err(Error::Busy));
        assert_eq!(asked.get(), 1, "asked once for another user");
        assert_eq!(u.open_lazy(0, 0, ask(true)), Ok(()), "an overriding caller");
        assert_eq!(asked.get(), 2);
        let mut w = WaitUid::<u32>::new();
        assert_eq!(w.open_lazy(5, 5, ask(true)), Ok(()));
        assert_eq!(asked.get(), 2, "free scullwuid asks nothing");
        assert_eq!(w.open_lazy(6, 6, ask(false)), Err(Error::WouldBlock));
        assert_eq!(asked.get(), 3);
    }

    #[test]
    fn extra_release_does_not_underflow() {
        let mut w = WaitUid::<u32>::new();
        assert!(w.release(), "releasing a free device reports it free");
        assert_eq!(w.state().count(), 0);
        let mut u = OwnerUid::<u32>::new();
        u.release();
        assert_eq!(u.open(&Caller::new(5, false)), Ok(()));
        assert_eq!(u.state().count(), 1);
    }

    /// scullpriv on Windows is keyed by process id, and Windows reuses
    /// process ids. A device is freed once its process has exited and no
    /// file holds it, so a later process with the same id starts empty, and
    /// exited processes do not fill the table.
    #[test]
    fn priv_table_frees_the_devices_of_exited_owners() {
        use std::cell::RefCell;
        use std::collections::HashSet;
        // The owners' liveness: the device records which process (a
        // serial number, as a process object would) it belongs to.
        let exited: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
        let gone = |_: &u32, d: &(u32, &str)| exited.borrow().contains(&d.0);
        let mut t = PrivTable::<u32, (u32, &str), 4>::new();
        // Process #1 with pid 7 writes its secret, closes, reopens: same data.
        let a = t.open_reaping(7, gone, || Ok((1, "secret of #1"))).unwrap();
        t.close(a);
        assert_eq!(t.open_reaping(7, gone, || panic!("#1 is alive: its device stays")).unwrap(), a);
        t.close(a);
        // #1 exits; pid 7 is reused by process #2: a fresh device.
        exited.borrow_mut().insert(1);
        let b = t.open_reaping(7, gone, || Ok((2, "empty"))).unwrap();
        assert_eq!(t.get(b), Some(&(2, "empty")), "a reused pid must not inherit a dead process's data");
        t.close(b);
        // Exited processes do not fill the table: 40 short-lived openers.
        for serial in 10..50u32 {
            let i = t.open_reaping(100 + serial, gone, || Ok((serial, "x"))).unwrap_or_else(|e| panic!("opener {serial}: {e:?}"));
            t.close(i);
            exited.borrow_mut().insert(serial);
        }
        assert!(t.len() <= 2, "only live owners' devices remain: {}", t.len());
        // A device still held open (a handle duplicated into another
        // process) is never freed, even after its process exited.
        let h = t.open_reaping(9, gone, || Ok((60, "held"))).unwrap();
        exited.borrow_mut().insert(60);
        assert_eq!(t.reap(gone), 0, "held open");
        assert_eq!(t.get(h), Some(&(60, "held")));
        t.close(h);
        assert_eq!(t.reap(gone), 1, "freed once the last file closed");
        assert_eq!(t.get(h), None);
        // Live owners fill the table: Busy, as before.
        let mut t = PrivTable::<u32, (u32, &str), 2>::new();
        t.open_reaping(1, gone, || Ok((70, "a"))).unwrap();
        t.open_reaping(2, gone, || Ok((71, "b"))).unwrap();
        assert_eq!(t.open_reaping(3, gone, || Ok((72, "c"))), Err(Error::Busy));
        assert_eq!((t.opens(0), t.opens(1)), (1, 1));
    }

    #[test]
    fn priv_table_iterates_keys() {
        let mut t = PrivTable::<u32, &str, 4>::new();
        t.lookup_or_create(3, || Ok("three")).unwrap();
        t.lookup_or_create(1, || Ok("one")).unwrap();
        let mut keys: [u32; 2] = [0; 2];
        for (i, (k, _)) in t.iter().enumerate() {
            keys[i] = *k;
        }
        keys.sort();
        assert_eq!(keys, [1, 3]);
        assert_eq!(t.find(&2), None);
    }
}
